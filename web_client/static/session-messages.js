// Huizhen web client: the Session's messages about recording and consent, the patient under
// discussion, chat, and moderation (docs/protocol.md, "Recording and consent", "Lobby, hold and
// moderation", "Chat"): the state the client keeps of them and what it sends. Methods of
// Session (session.js), mixed into its prototype.

import { SignalingError } from './signaling.js';

const RECORDING_STATES = new Set(['off', 'recording', 'paused']);
/** Roles that answer a recording consent request in the client (rooms/policy.py). */
export const CONSENT_ROLES = new Set(['patient', 'guardian']);
// how long the error of a recording message is matched to it by its `ref`
const RECORDING_REF_KEEP_MS = 30000;

/** The room's recording state from `joined.room` (recording_state, else the old boolean). */
export function recordingFromRoom(room) {
  const rs = room && typeof room.recording_state === 'object' ? room.recording_state : null;
  if (!rs) return recordingState({ state: room && room.recording === true ? 'recording' : 'off' });
  return recordingState(rs);
}

/** A `recording` state as the client keeps it (unknown values made safe). */
export function recordingState(m) {
  const state = RECORDING_STATES.has(m && m.state) ? m.state : 'off';
  const consent = m && (m.consent === 'granted' || m.consent === 'declined') ? m.consent : null;
  return {
    state,
    consent,
    recording_id: state !== 'off' && m.recording_id ? m.recording_id : null,
    override: state !== 'off' && !!m.override,
    started_at: state !== 'off' && m.started_at ? m.started_at : null,
  };
}

/**
 * The patient under discussion (`joined.room.subject`, a `subject` message) as the client keeps
 * it: {patient_ref, label, segment_id, since, set_by}, or null (nobody in particular).
 */
export function subjectState(s) {
  if (!s || typeof s !== 'object' || typeof s.patient_ref !== 'string' || !s.patient_ref) {
    return null;
  }
  return {
    patient_ref: s.patient_ref,
    label: typeof s.label === 'string' ? s.label : '',
    segment_id: typeof s.segment_id === 'string' ? s.segment_id : null,
    since: typeof s.since === 'string' ? s.since : null,
    set_by: typeof s.set_by === 'string' ? s.set_by : null,
  };
}

const CHAT_KEEP = 500; // messages kept in memory

export const messageMethods = {
  // ---- chat received --------------------------------------------------------------------------

  onChat(m) {
    if (typeof m.text !== 'string') return;
    const id = Number(m.id);
    if (Number.isFinite(id) && this.chat.some((c) => c.id === id)) return;
    const message = {
      id: Number.isFinite(id) ? id : null,
      participant_id: m.participant_id || null,
      name: m.name || '',
      text: m.text,
      at: m.at || new Date().toISOString(),
      mine: !!(this.me && m.participant_id === this.me.id),
    };
    this.chat.push(message);
    if (message.id !== null) this.chat.sort((a, b) => (a.id ?? Infinity) - (b.id ?? Infinity));
    if (this.chat.length > CHAT_KEEP) this.chat.splice(0, this.chat.length - CHAT_KEEP);
    this.emit('chat', message);
  },

  // ---- recording and consent (docs/protocol.md, "Recording and consent") -------------------

  setRecording(next, info = {}) {
    const previous = this.recording;
    this.recording = next;
    if (this.room) this.room.recording = next.state === 'recording';
    this.emit('recording', next, previous, info);
  },

  onRecording(m) {
    this.setRecording(recordingState(m), { reason: m.reason || null });
  },

  onConsentRequest(m) {
    if (m.kind && m.kind !== 'recording') return; // another kind of consent: not ours to show
    this.consentRequest = { by: typeof m.by === 'string' ? m.by : '' };
    this.emit('consent-request', this.consentRequest);
  },

  onRecordingConsent(m) {
    const granted = !!m.granted;
    this.consentBy = m.given_by_role === 'guardian' ? 'guardian' : 'patient';
    this.consentAsked = false;
    this.consentRequest = null;
    // the `recording` state that follows says the same; keep the two in step meanwhile
    this.recording = { ...this.recording, consent: granted ? 'granted' : 'declined' };
    this.emit('recording-consent', {
      granted,
      given_by_role: this.consentBy,
      method: m.method || null,
    });
    this.emit('recording-updated');
  },

  /** Send a recording message with an id, so that its error (if any) is told apart. */
  sendRecording(msg, action) {
    const id = `rec-${++this.recordingSeq}`;
    if (!this.sendMessage({ ...msg, id })) return false;
    this.recordingRefs.set(id, action);
    setTimeout(() => this.recordingRefs.delete(id), RECORDING_REF_KEEP_MS);
    return true;
  },

  /** Moderators: start|stop|pause|resume; a start without consent needs overrideReason. */
  recordingAction(action, overrideReason) {
    const msg = { type: 'recording', action };
    if (overrideReason) msg.override_reason = overrideReason;
    return this.sendRecording(msg, action);
  },

  /** Moderators: ask the patient / guardian in the room to agree to recording. */
  requestConsent() {
    const sent = this.sendRecording({ type: 'request_consent' }, 'request_consent');
    if (sent) {
      this.consentAsked = true;
      this.emit('recording-updated');
    }
    return sent;
  },

  /** The patient's / guardian's answer to a consent request. */
  answerConsent(granted) {
    const sent = this.sendRecording({ type: 'recording_consent', granted: !!granted }, 'consent');
    if (sent) {
      this.consentRequest = null;
      this.emit('recording-updated');
    }
    return sent;
  },
  // ---- the patient under discussion (ward rounds, MDT; docs/protocol.md) --------------------

  setSubject(next, info = {}) {
    const previous = this.subject;
    this.subject = next;
    this.emit('subject', next, previous, info);
  },

  onSubject(m) {
    this.setSubject(subjectState(m.subject));
  },

  // ---- moderation and chat (docs/protocol.md, "Lobby, hold and moderation", "Chat") -------

  /** Send a message to the server; false when not connected. */
  sendMessage(msg) {
    if (!this.sig || this.state !== 'joined') return false;
    return this.sig.send(msg);
  },

  /**
   * Tell the server how tall a received video is shown (device pixels), so that of a
   * simulcast track it sends the smallest layer that still looks sharp. Only in simulcast
   * rooms, and only when the size changed.
   */
  setVideoSize(trackId, maxHeight) {
    if (!this.simulcast || !trackId) return;
    if (this.videoSizes.get(trackId) === maxHeight) return;
    if (this.sendMessage({ type: 'video_size', track_id: trackId, max_height: maxHeight })) {
      this.videoSizes.set(trackId, maxHeight);
    }
  },

  admit(participantId) {
    return this.sendMessage({ type: 'admit', participant_id: participantId });
  },

  deny(participantId) {
    const record = this.lobby[participantId];
    if (record) this.knownAdmitted.delete(record.identity);
    return this.sendMessage({ type: 'deny', participant_id: participantId });
  },

  hold(participantId, held) {
    return this.sendMessage({ type: 'hold', participant_id: participantId, held: !!held });
  },

  muteParticipant(participantId, kind = 'audio') {
    return this.sendMessage({ type: 'mute_participant', participant_id: participantId, kind });
  },

  /** Pass the host role to a clinician (we take theirs); the server answers with role_changed. */
  handOff(participantId) {
    return this.sendMessage({ type: 'hand_off', participant_id: participantId });
  },

  remove(participantId) {
    const record = this.participants[participantId] || this.lobby[participantId];
    if (record) this.knownAdmitted.delete(record.identity);
    return this.sendMessage({ type: 'remove', participant_id: participantId });
  },

  endRoom(reason) {
    const msg = { type: 'end_room' };
    if (reason) msg.reason = reason;
    return this.sendMessage(msg);
  },

  /** A chat message; it comes back from the server (to everyone, us included) as `chat`. */
  sendChat(text) {
    const clean = String(text || '').trim().slice(0, 2000);
    if (!clean) return false;
    // no `id`: the echo must reach the 'chat' handler, not a pending request
    return this.sendMessage({ type: 'chat', text: clean });
  },

  /** Ask for an invitation link: resolves with {join_url, role, identity, expires_at}. */
  async createInvite(role, name) {
    if (!this.sig || this.state !== 'joined') throw new SignalingError('disconnected', 'offline');
    const msg = { type: 'create_invite', role };
    if (name) msg.name = name;
    return this.sig.request(msg);
  },
};
