// Huizhen web client: one participant's session — signalling plus the two peer connections
// (docs/protocol.md, "Media: two peer connections per participant").
//
// * publish connection: we offer, with one sendonly transceiver per local track the grants
//   allow; the server answers (`publish` / `publish_answer`).
// * subscribe connection: the server offers (`subscriber_offer`) whenever the set of tracks we
//   receive changes; we answer on the same RTCPeerConnection every time. `tracks` in each offer
//   maps m-line mid → {track_id, participant_id, kind, source}; m-lines not listed are inactive.
//
// No trickle ICE in v1: every description is sent after ICE gathering has completed.
//
// The Session holds no DOM. It emits events that app.js renders:
//   'state'                 (state)          idle|connecting|joining|joined|reconnecting|left|ended|failed
//   'joined'                ()               after every successful join (also after a reconnect)
//   'participant-added'     (participant)
//   'participant-updated'   (participant)    name/role/tracks/mute changed
//   'participant-removed'   (participant, reason)
//   'participants-reset'    ()               everyone removed (reconnect or end)
//   'remote-track'          (attachment)     {mid, participantId, trackId, kind, source, track}
//   'remote-track-removed'  (attachment)
//   'local-updated'         ()               local tracks / mute / track ids changed
//   'notice'                ({key?, code?, message?, level, sticky?})   for the banner
//   'notice-clear'          ()
//   'end'                   ({state, key, code?, message?, rejoin})     terminal
//   'admission'             (state)          our own state in the room: lobby|active|held
//   'lobby'                 ()               the lobby list changed (moderators)
//   'chat'                  (message)        a chat message {id, participant_id, name, text, at, mine}
//   'invite'                (invite)         {join_url, role, identity, expires_at}
//   'room-updated'          (room)
//   'recording'             (state, previous, info)   the server's recording state changed
//                           (state: {state: off|recording|paused, consent: null|granted|declined,
//                           recording_id, override, started_at}; info: {reason?, joined?, first?})
//   'recording-updated'     ()               our own side changed (we asked for consent, answered…)
//   'consent-request'       ({by})           a clinician asks us (patient/guardian) to agree
//   'recording-consent'     ({granted, given_by_role, method})   a consent decision was recorded
//   'recording-error'       ({action, code, message})  the server refused one of our recording
//                           messages (action: start|stop|pause|resume|request_consent|consent)
//   'subject'               (subject, previous, info)  the patient under discussion changed
//                           (ward rounds, MDT; subject: {patient_ref, label, segment_id, since,
//                           set_by} or null; info: {joined?})
//   'image-view'            ({seq, view})    the shared case image view (call-images.js)
//   'image-added'           (image)          a case image was uploaded to the room
//
// The Session class holds the state, the connection (join, reconnect, leave) and the wiring of
// the server's messages; its other methods live with what they do and are mixed into its
// prototype: session-media.js (our tracks, the publish, screen and subscribe connections),
// session-roster.js (participants, lobby, hold) and session-messages.js (recording and
// consent, the patient under discussion, chat, moderation).

import { CLOSE_STALE, Signaling, SignalingError } from './signaling.js';
import { mediaMethods, preferVideoCodec, waitForIceGathering } from './session-media.js';
import {
  CONSENT_ROLES,
  messageMethods,
  recordingFromRoom,
  recordingState,
  subjectState,
} from './session-messages.js';
import { rosterMethods } from './session-roster.js';
import { AUDIENCE_MESSAGES, broadcastMethods, emptyAudience } from './session-broadcast.js';
import { clinicalMethods } from './session-clinical.js';

export { CONSENT_ROLES, preferVideoCodec, recordingFromRoom, recordingState, waitForIceGathering };

const RECONNECT_BASE_MS = 400;
const RECONNECT_FACTOR = 1.6;
const RECONNECT_MAX_MS = 8000;
const RECONNECT_GIVE_UP_MS = 5 * 60 * 1000;
const LEAVE_CLOSE_DELAY_MS = 1500;
// After `room_ended` / `denied` / `removed` the server closes the socket itself; we close it only
// if it has not after this long. (Closing at once can cut short the server's own work: the
// moderator who ended the room must not hang up while the server is still telling the others.)
const SERVER_CLOSE_WAIT_MS = 5000;

const TERMINAL = new Set(['left', 'ended', 'failed']);

/** Close codes (docs/protocol.md, "Close codes"). */
export const CLOSE_LEFT = 1000;
export const CLOSE_RESTARTING = 1012;
export const CLOSE_TOKEN = 4001;
export const CLOSE_MODERATOR = 4003;
export const CLOSE_ROOM = 4004;
export const CLOSE_REPLACED = 4009;
export const CLOSE_ENDED = 4010;

/** Join errors worth retrying (anything else is final: bad link, no room, room full…). */
const RETRYABLE_JOIN_ERRORS = new Set(['timeout', 'disconnected', 'internal', 'draining']);
// A server being drained says `reconnect` (retry_ms) before it closes with 1012: we then try
// every retry_ms, without growing the backoff, for this long (its successor is starting).
const DRAIN_RETRY_FOR_MS = 30 * 1000;

const DEVICE_KEY = 'huizhen.device';
let device = null; // kept for the page's life even where storage is disabled

/** This browser's id: a single-use invite belongs to the first device that uses it. */
export function deviceId() {
  if (device) return device;
  let id = null;
  try {
    id = localStorage.getItem(DEVICE_KEY);
  } catch {
    // storage disabled: an id for this page's life
  }
  if (!id || !/^[A-Za-z0-9_-]{8,64}$/.test(id)) {
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    id = Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
    try {
      localStorage.setItem(DEVICE_KEY, id);
    } catch {
      // not remembered
    }
  }
  device = id;
  return id;
}

export class Session {
  /**
   * @param {{wsUrl: string, token: string, localStream: MediaStream|null,
   *          localProblem?: string|null}} options
   */
  constructor({ wsUrl, token, localStream }) {
    this.wsUrl = wsUrl;
    this.token = token;
    this.localStream = localStream || null;

    this.state = 'idle';
    this.end = null; // {state, key, code, message} once terminal
    this.room = null;
    this.me = null;
    this.participants = {}; // id -> record (everyone but us)
    this.iceServers = [];
    this.videoCodec = 'VP8';
    this.heartbeatS = 3;
    this.pcs = { publish: null, subscribe: null, screen: null };
    /** our own state in the room: lobby|active|held (null before the first join) */
    this.admission = null;
    /** participants waiting in the lobby (moderators only): id -> record */
    this.lobby = {};
    /** chat messages, oldest first */
    this.chat = [];
    /**
     * Identities a moderator has seen in the call. Should the server forget an admission (a
     * restart), they are admitted again at once when they come back through the lobby.
     */
    this.knownAdmitted = new Set();
    /** our screen share: {track, trackId, mid} or null */
    this.screen = null;
    /** the room's recording state (docs/protocol.md, "Recording and consent") */
    this.recording = recordingState({ state: 'off' });
    /** who gave or refused the latest consent in the client: patient|guardian (null: unknown) */
    this.consentBy = null;
    /** moderators: we asked the patient and no answer has come yet */
    this.consentAsked = false;
    /** patient/guardian: the open question {by}, or null */
    this.consentRequest = null;
    this.recordingRefs = new Map(); // id of our recording message -> action
    this.recordingSeq = 0;
    /** the patient under discussion (ward rounds, MDT): see subjectState(), or null */
    this.subject = null;
    /** a teaching broadcast's audience, hands and questions (session-broadcast.js) */
    this.audience = emptyAudience();
    /** ward round / MDT agenda (see agendaState()), or null */
    this.agenda = null;
    /** the room's clinical documents, every version we know (care team) */
    this.documents = [];
    this.joinedOnce = false;

    // our own tracks: {track, kind, source, muted, trackId, sentMuted, mid, sender}
    this.local = { audio: null, video: null };
    if (this.localStream) {
      const a = this.localStream.getAudioTracks()[0];
      const v = this.localStream.getVideoTracks()[0];
      if (a) this.local.audio = this.localItem(a, 'microphone');
      if (v) this.local.video = this.localItem(v, 'camera');
    }

    this.sig = null;
    this.gen = 0; // bumped on every (re)connection and at the end; stale callbacks check it
    this.handlers = new Map();
    this.offerQueue = Promise.resolve();
    this.midMap = new Map(); // mid -> offer track entry (latest offer)
    this.attached = new Map(); // mid -> attachment
    // participants who left: an offer already under way may still list their tracks
    this.departed = new Set();
    this.reconnectTimer = null;
    this.reconnectAttempts = 0;
    this.reconnectSince = null;
    this.drainRetry = null; // {ms, until}: the last `reconnect` hint (a server restarting)
    this.onOnline = () => {
      if (this.state === 'reconnecting' && this.reconnectTimer !== null) {
        clearTimeout(this.reconnectTimer);
        this.reconnectTimer = null;
        this.connect();
      }
    };
    window.addEventListener('online', this.onOnline);
  }

  // ---- events -------------------------------------------------------------------------------

  on(name, fn) {
    if (!this.handlers.has(name)) this.handlers.set(name, new Set());
    this.handlers.get(name).add(fn);
    return () => this.handlers.get(name)?.delete(fn);
  }

  emit(name, ...args) {
    for (const fn of this.handlers.get(name) || []) {
      try {
        fn(...args);
      } catch (err) {
        console.error(`[huizhen] '${name}' handler failed`, err);
      }
    }
  }

  setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.emit('state', state);
  }

  get isTerminal() {
    return TERMINAL.has(this.state);
  }

  get isModerator() {
    return !!(this.me && this.me.grants && this.me.grants.moderate);
  }

  /** May start, stop and pause the recording (grants.record). */
  get canRecord() {
    return !!(this.me && this.me.grants && this.me.grants.record);
  }

  /** Answers recording consent requests (the patient or a guardian). */
  get givesConsent() {
    return !!(this.me && CONSENT_ROLES.has(this.me.role));
  }

  /** Our screen is being shared (session-media.js). */
  get isSharingScreen() {
    return !!this.screen;
  }

  setAdmission(state) {
    if (this.me) this.me.state = state;
    if (this.admission === state) return;
    this.admission = state;
    this.emit('admission', state);
  }

  // ---- connection lifecycle -----------------------------------------------------------------

  /** Connect and join. Reconnects by itself until the session ends. */
  start() {
    this.connect();
  }

  async connect() {
    if (this.isTerminal) return;
    const gen = ++this.gen;
    const sig = new Signaling(this.wsUrl);
    this.sig = sig;
    this.wireSignaling(sig, gen);
    if (this.state !== 'reconnecting') this.setState('connecting');
    try {
      await sig.connect();
      if (gen !== this.gen) return;
      this.setState('joining');
      const joined = await sig.request({ type: 'join', v: 1, token: this.token, device: deviceId() });
      if (gen !== this.gen) return;
      this.applyJoined(joined);
    } catch (err) {
      if (gen !== this.gen || this.isTerminal) return;
      const code = err instanceof SignalingError ? err.code : 'internal';
      if (!RETRYABLE_JOIN_ERRORS.has(code)) {
        // the server closes the socket after a join error (4001 token, 4004 room)
        const opensAt = code === 'too_early' && err.error ? new Date(err.error.opens_at) : null;
        const opens = opensAt && !Number.isNaN(opensAt.getTime()) ? opensAt : null;
        this.finish(code === 'room_ended' ? 'ended' : 'failed', {
          key: code === 'room_ended' ? 'ended' : opens ? 'error_too_early_at' : null,
          vars: opens ? { time: opens } : undefined,
          code,
          message: err.message,
        });
        return;
      }
      console.warn('[huizhen] join failed, will retry:', code, err.message);
      sig.close(CLOSE_STALE, 'join failed'); // the close handler schedules the retry
      return;
    }

    sig.startHeartbeat(this.heartbeatS);
    const wasReconnecting = this.reconnectSince !== null;
    this.reconnectAttempts = 0;
    this.reconnectSince = null;
    this.drainRetry = null;
    this.setState('joined');
    if (wasReconnecting) this.emit('notice-clear');
    this.emit('joined');
    if (this.room && Array.isArray(this.room.documents) && this.room.documents.length) {
      this.loadDocuments().catch((err) => console.warn('[huizhen] documents not loaded', err));
    }
    this.setAdmission(this.me && this.me.state ? this.me.state : 'active');
    // a lobby we can skip: a moderator admits those it has already seen in the call
    for (const p of Object.values(this.lobby)) this.maybeAutoAdmit(p);
    // a promoted viewer back after a reconnect: still a speaker (its microphone again)
    if (this.audience.promoted && !this.local.audio && !this.local.video) {
      await this.onPromotion({ promoted: true }, gen);
      return;
    }
    // from the lobby too: connected ahead, sending nothing until admitted (instant admission)
    if (this.admission === 'active' || this.admission === 'lobby') await this.publishAll(gen);
  }

  /** Camera and microphone, then the screen share if one was running before a reconnect. */
  async publishAll(gen) {
    if (gen !== this.gen) return;
    if (!this.pcs.publish) await this.publish(gen);
    if (gen !== this.gen) return;
    if (this.screen && !this.pcs.screen && this.screen.track.readyState === 'live') {
      try {
        await this.negotiateScreen(gen);
      } catch (err) {
        if (gen !== this.gen) return;
        console.warn('[huizhen] screen share could not be sent again', err);
        this.stopScreenShare();
      }
    }
  }

  wireSignaling(sig, gen) {
    const live = (fn) => (msg) => {
      if (gen === this.gen && !this.isTerminal) fn(msg);
    };
    sig.on('subscriber_offer', live((m) => this.enqueueOffer(m, gen)));
    sig.on('participant_joined', live((m) => this.onParticipantJoined(m)));
    sig.on('participant_left', live((m) => this.onParticipantLeft(m)));
    sig.on('track_published', live((m) => this.onTrackPublished(m)));
    sig.on('track_unpublished', live((m) => this.onTrackUnpublished(m)));
    sig.on('track_muted', live((m) => this.onTrackMuted(m)));
    sig.on('room_ended', live(() => this.finishByServer('ended', { key: 'ended', code: 'room_ended' })));
    sig.on('participant_updated', live((m) => this.onParticipantUpdated(m)));
    sig.on('admitted', live((m) => this.onAdmitted(m, gen)));
    sig.on('denied', live(() => this.finishByServer('failed', { key: 'denied', code: 'denied' })));
    sig.on('removed', live(() => this.finishByServer('failed', { key: 'removed', code: 'removed' })));
    sig.on('held', live((m) => this.onHeld(m, gen)));
    sig.on('muted_by_host', live((m) => this.onMutedByHost(m)));
    sig.on('chat', live((m) => this.onChat(m)));
    sig.on('invite', live((m) => this.emit('invite', m)));
    sig.on('video_paused', live((m) => this.onVideoPaused(m)));
    sig.on('active_speaker', live((m) => this.emit('active-speaker', m.participant_id)));
    sig.on('connection_quality', live((m) => this.emit('connection-quality', m)));
    sig.on('recording', live((m) => this.onRecording(m)));
    sig.on('consent_request', live((m) => this.onConsentRequest(m)));
    sig.on('recording_consent', live((m) => this.onRecordingConsent(m)));
    sig.on('subject', live((m) => this.onSubject(m)));
    sig.on('image_view', live((m) => this.emit('image-view', m)));
    sig.on('image_added', live((m) => this.emit('image-added', m.image)));
    sig.on('agenda', live((m) => this.onAgenda(m)));
    sig.on('document', live((m) => this.onDocument(m)));
    sig.on('role_changed', live((m) => this.onRoleChanged(m)));
    // a teaching broadcast (session-broadcast.js): after onRoleChanged, which set our grants
    sig.on('role_changed', live((m) => this.onPromotion(m, gen)));
    for (const type of AUDIENCE_MESSAGES) sig.on(type, live((m) => this.onAudienceMessage(m)));
    sig.on('reconnect', live((m) => {
      const ms = Math.min(Math.max(Number(m.retry_ms) || 500, 100), 10000);
      this.drainRetry = { ms, until: Date.now() + DRAIN_RETRY_FOR_MS };
    }));
    sig.on('error', live((m) => this.onServerError(m)));
    sig.on('close', live((ev) => this.onSocketClosed(ev)));
  }

  applyJoined(j) {
    this.room = j.room || null;
    this.me = j.me || null;
    this.iceServers = Array.isArray(j.ice_servers) ? j.ice_servers : [];
    this.videoCodec = j.video_codec || 'VP8';
    this.simulcast = !!j.simulcast;
    this.videoSizes = new Map(); // video_size sent per track, on this connection
    this.heartbeatS = Number(j.heartbeat_s) > 0 ? Number(j.heartbeat_s) : 3;

    this.emit('room-updated', this.room);
    const first = !this.joinedOnce;
    this.joinedOnce = true;
    this.setRecording(recordingFromRoom(this.room), { joined: true, first });
    this.setSubject(subjectState(this.room && this.room.subject), { joined: true });
    this.applyAudienceRoom(this.room);
    this.setAgenda(this.room && this.room.agenda);
    this.setParticipants(j.participants || []);

    // Captured something the grants do not allow (the token hint was wider)? Release it.
    const grants = (this.me && this.me.grants) || {};
    for (const [kind, grant] of [['audio', 'publish_audio'], ['video', 'publish_video']]) {
      const item = this.local[kind];
      if (item && !grants[grant]) {
        item.track.stop();
        if (this.localStream) this.localStream.removeTrack(item.track);
        this.local[kind] = null;
      }
    }
    this.emit('local-updated');
  }

  onSocketClosed({ code }) {
    if (code === CLOSE_ENDED) {
      this.finish('ended', { key: 'ended', code: 'room_ended' });
      return;
    }
    if (code === CLOSE_MODERATOR) {
      // normally `denied` / `removed` came first and ended the session already
      const denied = this.admission === 'lobby';
      this.finish('failed', {
        key: denied ? 'denied' : 'removed',
        code: denied ? 'denied' : 'removed',
      });
      return;
    }
    if (code === CLOSE_REPLACED) {
      // the same identity joined from another tab or device: rejoining by ourselves would take
      // the call back from it, so let the user decide
      this.finish('failed', { key: 'replaced', code: 'replaced', rejoin: true });
      return;
    }
    if ((code === CLOSE_TOKEN || code === CLOSE_ROOM) && this.state === 'joining') {
      // normally the `error` reply came first and ended the session; this is the fallback
      this.finish('failed', { key: 'error_generic', code: String(code) });
      return;
    }
    // 1000 after our own `leave` never gets here (the session has finished by then). Anything
    // else — network loss (1006), a server restart (1012, 1001), a stale connection (4000), or
    // a plain close nobody asked for — means: join again with the same token.
    this.scheduleReconnect();
  }

  /** Drop the connections and everyone's media, then rejoin with backoff. */
  scheduleReconnect() {
    if (this.isTerminal) return;
    this.gen++;
    this.teardownConnections();
    if (this.sig) this.sig.close(1000, 'reconnecting');
    if (this.reconnectSince === null) this.reconnectSince = Date.now();
    if (Date.now() - this.reconnectSince > RECONNECT_GIVE_UP_MS) {
      this.finish('failed', { key: 'connection_failed', rejoin: true });
      return;
    }
    this.setState('reconnecting');
    this.emit('notice', { key: 'connection_lost', level: 'warning', sticky: true });
    const hinted = this.drainRetry && Date.now() < this.drainRetry.until;
    const base = hinted ? this.drainRetry.ms
      : Math.min(RECONNECT_BASE_MS * RECONNECT_FACTOR ** this.reconnectAttempts, RECONNECT_MAX_MS);
    // jitter: after a server restart, not everyone knocks at the same moment
    const delay = Math.round(base * (0.75 + Math.random() * 0.5));
    this.reconnectAttempts++;
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      this.connect();
    }, delay);
  }

  /** Rejoin now (a peer connection failed, or the server forgot us). */
  forceReconnect(noticeKey) {
    if (this.isTerminal) return;
    if (noticeKey) this.emit('notice', { key: noticeKey, level: 'warning' });
    this.scheduleReconnect();
  }

  /** Close both peer connections and forget all remote media (keeps local tracks). */
  teardownConnections() {
    for (const which of ['publish', 'subscribe', 'screen']) {
      const pc = this.pcs[which];
      if (pc) {
        pc.onconnectionstatechange = null;
        pc.ontrack = null;
        pc.close();
      }
      this.pcs[which] = null;
    }
    for (const mid of [...this.attached.keys()]) this.detachMid(mid);
    this.midMap = new Map();
    this.offerQueue = Promise.resolve();
    for (const item of [this.local.audio, this.local.video]) {
      if (item) {
        item.trackId = null;
        item.sentMuted = null;
        item.mid = null;
        item.sender = null;
      }
    }
    if (this.screen) {
      // the track keeps running: it is sent again after the reconnect
      this.screen.trackId = null;
      this.screen.mid = null;
    }
    this.participants = {};
    this.lobby = {};
    this.emit('participants-reset');
    this.emit('lobby');
    this.emit('local-updated');
  }

  /** Leave the consultation (the Leave button). */
  leave() {
    if (this.isTerminal) return;
    const sig = this.sig;
    if (sig && this.state === 'joined') sig.send({ type: 'leave' });
    if (this.screen) this.screen.track.stop();
    this.finish('left', { key: 'left', rejoin: true }, { keepSocket: true });
    // the server closes the socket (1000) after `leave`; close it ourselves if it does not
    if (sig) setTimeout(() => sig.close(1000, 'left'), LEAVE_CLOSE_DELAY_MS);
  }

  /** The server ended our session and will close the socket: let it, with a fallback. */
  finishByServer(state, info) {
    const sig = this.sig;
    this.finish(state, info, { keepSocket: true });
    if (sig) setTimeout(() => sig.close(1000, state), SERVER_CLOSE_WAIT_MS);
  }

  /** End the session for good: state left|ended|failed. */
  finish(state, info, { keepSocket = false } = {}) {
    if (this.isTerminal) return;
    this.gen++;
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    window.removeEventListener('online', this.onOnline);
    this.teardownConnections();
    this.stopLocalTracks();
    if (this.sig) {
      this.sig.stopHeartbeat();
      if (!keepSocket) this.sig.close(1000, state);
    }
    this.end = { state, key: null, code: null, message: null, rejoin: false, ...info };
    this.setState(state);
    this.emit('end', this.end);
  }

  // ---- server events ------------------------------------------------------------------------

  onServerError(msg) {
    const action = msg.ref !== undefined ? this.recordingRefs.get(String(msg.ref)) : undefined;
    if (action) {
      // a refused recording message: the recording UI says what to do (consent_required opens
      // the host's consent dialog), not the generic banner
      this.recordingRefs.delete(String(msg.ref));
      console.info('[huizhen] recording message refused:', action, msg.code);
      if (action === 'request_consent') {
        this.consentAsked = false;
        this.emit('recording-updated');
      }
      this.emit('recording-error', { action, code: msg.code, message: msg.message });
      return;
    }
    console.warn('[huizhen] server error', msg.code, msg.message, msg.ref ?? '');
    this.emit('notice', { code: msg.code, message: msg.message, level: 'error' });
  }
}

Object.assign(Session.prototype, mediaMethods, rosterMethods, messageMethods, clinicalMethods, broadcastMethods);
