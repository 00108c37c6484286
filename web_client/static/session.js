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

import { CLOSE_STALE, Signaling, SignalingError } from './signaling.js';

const ICE_GATHER_TIMEOUT_MS = 10000;
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
const CHAT_KEEP = 500; // messages kept in memory
/**
 * Camera simulcast layers, lowest first (the server's convention): half size for weak links
 * and small tiles, full size for the rest. Chromium sends two layers for a 640x480 camera.
 */
const SIMULCAST_ENCODINGS = [
  { rid: 'l', scaleResolutionDownBy: 2, maxBitrate: 200000 },
  { rid: 'h', scaleResolutionDownBy: 1, maxBitrate: 900000 },
];

/** Close codes (docs/protocol.md, "Close codes"). */
export const CLOSE_LEFT = 1000;
export const CLOSE_RESTARTING = 1012;
export const CLOSE_TOKEN = 4001;
export const CLOSE_MODERATOR = 4003;
export const CLOSE_ROOM = 4004;
export const CLOSE_REPLACED = 4009;
export const CLOSE_ENDED = 4010;

/** Join errors worth retrying (anything else is final: bad link, no room, room full…). */
const RETRYABLE_JOIN_ERRORS = new Set(['timeout', 'disconnected', 'internal']);

/**
 * Resolve once `pc` has finished gathering ICE candidates (so that localDescription.sdp carries
 * them all), or after timeoutMs — an unreachable STUN/TURN server must not hang the call; we
 * then send what has been gathered. Resolves true when gathering really completed.
 */
export function waitForIceGathering(pc, timeoutMs = ICE_GATHER_TIMEOUT_MS) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve(true);
  return new Promise((resolve) => {
    const done = (complete) => {
      clearTimeout(timer);
      pc.removeEventListener('icegatheringstatechange', onState);
      pc.removeEventListener('icecandidate', onCandidate);
      resolve(complete);
    };
    const onState = () => {
      if (pc.iceGatheringState === 'complete') done(true);
    };
    // a null candidate also marks the end of gathering (some browsers fire it first)
    const onCandidate = (ev) => {
      if (!ev.candidate) done(true);
    };
    const timer = setTimeout(() => {
      console.warn('[huizhen] ICE gathering did not complete in time; sending what we have');
      done(false);
    }, timeoutMs);
    pc.addEventListener('icegatheringstatechange', onState);
    pc.addEventListener('icecandidate', onCandidate);
  });
}

/**
 * Put the room's video codec ("VP8" or "H264") first — in fact alone, with its RTX — in the
 * transceiver's offer, since the server rejects other video codecs. No-op where
 * setCodecPreferences is missing or the codec is unknown to the browser.
 */
export function preferVideoCodec(transceiver, codecName) {
  if (typeof transceiver.setCodecPreferences !== 'function') return false;
  const caps = (window.RTCRtpReceiver && RTCRtpReceiver.getCapabilities?.('video')) || null;
  if (!caps || !Array.isArray(caps.codecs)) return false;
  const wanted = `video/${String(codecName || 'VP8').toLowerCase()}`;
  const main = caps.codecs.filter((c) => c.mimeType.toLowerCase() === wanted);
  if (main.length === 0) {
    console.warn(`[huizhen] this browser cannot send ${codecName}`);
    return false;
  }
  if (wanted === 'video/h264') {
    // packetization-mode=1 and constrained baseline first: the most widely decodable profile
    const score = (c) => {
      const fmtp = (c.sdpFmtpLine || '').toLowerCase();
      let s = 0;
      if (fmtp.includes('packetization-mode=1')) s -= 2;
      if (/profile-level-id=42e0/.test(fmtp)) s -= 1;
      return s;
    };
    main.sort((a, b) => score(a) - score(b));
  }
  const rtx = caps.codecs.filter((c) => c.mimeType.toLowerCase() === 'video/rtx');
  try {
    transceiver.setCodecPreferences([...main, ...rtx]);
    return true;
  } catch (err) {
    console.warn('[huizhen] setCodecPreferences failed', err);
    return false;
  }
}

function makeParticipant(p) {
  const record = {
    id: p.id,
    identity: p.identity || '',
    name: p.name || p.identity || '',
    role: p.role || '',
    grants: { ...(p.grants || {}) },
    state: p.state || 'active',
    joined_at: p.joined_at || null,
    // track_id -> {id, kind, source, muted}
    tracks: {},
    // track ids whose media is currently attached (arriving on the subscribe connection)
    receiving: [],
    // the server paused this participant's video for us (weak network)
    videoPaused: false,
  };
  for (const tr of p.tracks || []) record.tracks[tr.id] = trackRecord(tr);
  return record;
}

function trackRecord(tr) {
  return {
    id: tr.id,
    kind: tr.kind,
    source: tr.source || (tr.kind === 'audio' ? 'microphone' : 'camera'),
    muted: !!tr.muted,
  };
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

  setAdmission(state) {
    if (this.me) this.me.state = state;
    if (this.admission === state) return;
    this.admission = state;
    this.emit('admission', state);
  }

  // ---- local tracks -------------------------------------------------------------------------

  localItem(track, source) {
    const item = {
      track,
      kind: track.kind,
      source,
      muted: !track.enabled,
      trackId: null,
      sentMuted: null,
      mid: null,
      sender: null,
      ended: track.readyState === 'ended',
    };
    this.watchTrackEnd(item);
    return item;
  }

  watchTrackEnd(item) {
    // fires when the device goes away or permission is revoked (not on track.stop())
    item.track.addEventListener('ended', () => {
      if (this.local[item.kind] !== item) return;
      item.ended = true;
      this.emit('notice', {
        key: item.kind === 'video' ? 'camera_stopped' : 'mic_stopped',
        level: 'warning',
      });
      this.emit('local-updated');
    });
  }

  /** Mute or unmute our microphone ('audio') or camera ('video'). */
  setMuted(kind, muted) {
    const item = this.local[kind];
    if (!item) return;
    item.muted = !!muted;
    item.track.enabled = !item.muted;
    this.syncMute(item);
    this.emit('local-updated');
  }

  /** Tell the server when the muted state differs from what it last heard. */
  syncMute(item) {
    if (!item.trackId || item.sentMuted === item.muted || this.state !== 'joined') return;
    if (this.sig && this.sig.send({ type: 'mute', track_id: item.trackId, muted: item.muted })) {
      item.sentMuted = item.muted;
    }
  }

  /** Swap the camera (front/back) without renegotiating. The old track must already be stopped. */
  async replaceLocalVideo(track) {
    const item = this.local.video;
    if (!item) return;
    const old = item.track;
    track.enabled = !item.muted;
    item.track = track;
    item.ended = false;
    this.watchTrackEnd(item);
    if (this.localStream) {
      this.localStream.removeTrack(old);
      this.localStream.addTrack(track);
    }
    if (item.sender) await item.sender.replaceTrack(track);
    this.emit('local-updated');
  }

  stopLocalTracks() {
    for (const item of [this.local.audio, this.local.video]) {
      if (item) item.track.stop();
    }
    if (this.screen) this.screen.track.stop();
    this.screen = null;
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
      const joined = await sig.request({ type: 'join', v: 1, token: this.token });
      if (gen !== this.gen) return;
      this.applyJoined(joined);
    } catch (err) {
      if (gen !== this.gen || this.isTerminal) return;
      const code = err instanceof SignalingError ? err.code : 'internal';
      if (!RETRYABLE_JOIN_ERRORS.has(code)) {
        // the server closes the socket after a join error (4001 token, 4004 room)
        this.finish(code === 'room_ended' ? 'ended' : 'failed', {
          key: code === 'room_ended' ? 'ended' : null,
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
    this.setState('joined');
    if (wasReconnecting) this.emit('notice-clear');
    this.emit('joined');
    this.setAdmission(this.me && this.me.state ? this.me.state : 'active');
    // a lobby we can skip: a moderator admits those it has already seen in the call
    for (const p of Object.values(this.lobby)) this.maybeAutoAdmit(p);
    if (this.admission === 'active') await this.publishAll(gen);
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
    sig.on('recording', live((m) => this.onRecording(m)));
    sig.on('consent_request', live((m) => this.onConsentRequest(m)));
    sig.on('recording_consent', live((m) => this.onRecordingConsent(m)));
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

  /** Replace everyone we know with `list` (joined / admitted). */
  setParticipants(list) {
    if (Object.keys(this.participants).length) {
      for (const mid of [...this.attached.keys()]) {
        const a = this.attached.get(mid);
        if (!list.some((p) => p.id === a.participantId)) this.detachMid(mid);
      }
    }
    const previous = this.participants;
    this.participants = {};
    this.lobby = {};
    for (const p of list) {
      if (!p || !p.id || (this.me && p.id === this.me.id)) continue;
      if (p.state === 'lobby') {
        this.lobby[p.id] = makeParticipant(p);
        continue;
      }
      const record = makeParticipant(p);
      const old = previous[p.id];
      if (old) {
        record.receiving = old.receiving;
        record.tracks = { ...old.tracks, ...record.tracks };
      }
      this.participants[p.id] = record;
      this.noteAdmitted(record);
      this.emit(old ? 'participant-updated' : 'participant-added', record);
    }
    for (const [id, old] of Object.entries(previous)) {
      if (!this.participants[id]) this.emit('participant-removed', old, 'left');
    }
    this.emit('lobby');
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
    const base = Math.min(RECONNECT_BASE_MS * RECONNECT_FACTOR ** this.reconnectAttempts,
      RECONNECT_MAX_MS);
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

  onParticipantJoined({ participant }) {
    if (!participant || !participant.id || (this.me && participant.id === this.me.id)) return;
    this.departed.delete(participant.id);
    if (participant.state === 'lobby') {
      // only moderators hear of people in the lobby
      this.lobby[participant.id] = makeParticipant(participant);
      this.emit('lobby');
      this.maybeAutoAdmit(this.lobby[participant.id]);
      return;
    }
    if (this.lobby[participant.id]) {
      delete this.lobby[participant.id];
      this.emit('lobby');
    }
    const existing = this.participants[participant.id];
    const record = makeParticipant(participant);
    this.noteAdmitted(record);
    if (existing) {
      // we created a placeholder when its media arrived first; keep what we know
      record.receiving = existing.receiving;
      record.tracks = { ...existing.tracks, ...record.tracks };
      this.participants[participant.id] = record;
      this.emit('participant-updated', record);
    } else {
      this.participants[participant.id] = record;
      this.emit('participant-added', record);
    }
  }

  onParticipantLeft({ participant_id: id, reason }) {
    if (this.me && id === this.me.id) {
      // our own session was closed by the server
      if (reason === 'replaced') this.finish('failed', { key: 'replaced', code: 'replaced' });
      else if (reason === 'room_ended') this.finish('ended', { key: 'ended' });
      else this.forceReconnect('connection_lost');
      return;
    }
    if (this.lobby[id]) {
      delete this.lobby[id];
      this.emit('lobby');
    }
    const record = this.participants[id];
    if (!record) {
      this.departed.add(id);
      return;
    }
    for (const [mid, a] of [...this.attached]) if (a.participantId === id) this.detachMid(mid);
    delete this.participants[id];
    this.departed.add(id);
    this.emit('participant-removed', record, reason);
  }

  /** A participant's state changed: lobby → active, active ↔ held (docs/protocol.md). */
  onParticipantUpdated({ participant: p }) {
    if (!p || !p.id) return;
    if (this.me && p.id === this.me.id) {
      if (p.state === 'held' || p.state === 'active') this.setAdmission(p.state);
      return;
    }
    if (p.state === 'lobby') {
      this.lobby[p.id] = makeParticipant(p);
      this.emit('lobby');
      return;
    }
    if (this.lobby[p.id]) {
      delete this.lobby[p.id];
      this.emit('lobby');
    }
    const existing = this.participants[p.id];
    if (!existing) {
      this.onParticipantJoined({ participant: p });
      return;
    }
    existing.state = p.state || existing.state;
    if (p.name) existing.name = p.name;
    if (p.role) existing.role = p.role;
    if (p.grants) existing.grants = { ...p.grants };
    for (const tr of p.tracks || []) {
      existing.tracks[tr.id] = { ...(existing.tracks[tr.id] || {}), ...trackRecord(tr) };
    }
    this.noteAdmitted(existing);
    this.emit('participant-updated', existing);
  }

  /** We were let in from the lobby: the room as in `joined`, then media offers follow. */
  async onAdmitted(msg, gen) {
    if (Array.isArray(msg.participants)) this.setParticipants(msg.participants);
    if (msg.room && typeof msg.room === 'object') {
      this.room = { ...(this.room || {}), ...msg.room };
      this.emit('room-updated', this.room);
    }
    this.setAdmission('active');
    await this.publishAll(gen);
  }

  async onHeld({ held }, gen) {
    this.setAdmission(held ? 'held' : 'active');
    // publishing is refused while on hold; a reconnect during the hold publishes now
    if (!held) await this.publishAll(gen);
  }

  onMutedByHost({ kind }) {
    if (kind !== 'audio' && kind !== 'video') return;
    const item = this.local[kind];
    if (item && !item.muted) {
      item.muted = true;
      item.track.enabled = false;
      // the server has marked the track muted already
      item.sentMuted = true;
      this.emit('local-updated');
    }
    this.emit('notice', {
      key: kind === 'audio' ? 'muted_by_host_audio' : 'muted_by_host_video',
      level: 'info',
    });
  }

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
  }

  // ---- recording and consent (docs/protocol.md, "Recording and consent") -------------------

  setRecording(next, info = {}) {
    const previous = this.recording;
    this.recording = next;
    if (this.room) this.room.recording = next.state === 'recording';
    this.emit('recording', next, previous, info);
  }

  onRecording(m) {
    this.setRecording(recordingState(m), { reason: m.reason || null });
  }

  onConsentRequest(m) {
    if (m.kind && m.kind !== 'recording') return; // another kind of consent: not ours to show
    this.consentRequest = { by: typeof m.by === 'string' ? m.by : '' };
    this.emit('consent-request', this.consentRequest);
  }

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
  }

  /** Send a recording message with an id, so that its error (if any) is told apart. */
  sendRecording(msg, action) {
    const id = `rec-${++this.recordingSeq}`;
    if (!this.sendMessage({ ...msg, id })) return false;
    this.recordingRefs.set(id, action);
    setTimeout(() => this.recordingRefs.delete(id), RECORDING_REF_KEEP_MS);
    return true;
  }

  /** Moderators: start|stop|pause|resume; a start without consent needs overrideReason. */
  recordingAction(action, overrideReason) {
    const msg = { type: 'recording', action };
    if (overrideReason) msg.override_reason = overrideReason;
    return this.sendRecording(msg, action);
  }

  /** Moderators: ask the patient / guardian in the room to agree to recording. */
  requestConsent() {
    const sent = this.sendRecording({ type: 'request_consent' }, 'request_consent');
    if (sent) {
      this.consentAsked = true;
      this.emit('recording-updated');
    }
    return sent;
  }

  /** The patient's / guardian's answer to a consent request. */
  answerConsent(granted) {
    const sent = this.sendRecording({ type: 'recording_consent', granted: !!granted }, 'consent');
    if (sent) {
      this.consentRequest = null;
      this.emit('recording-updated');
    }
    return sent;
  }

  onVideoPaused({ participant_id: pid, paused }) {
    const record = this.participants[pid];
    if (!record) return;
    record.videoPaused = !!paused;
    this.emit('participant-updated', record);
  }

  /** Moderators remember who has been in the call (see knownAdmitted). */
  noteAdmitted(record) {
    if (record && record.identity && record.state !== 'lobby') {
      this.knownAdmitted.add(record.identity);
    }
  }

  maybeAutoAdmit(record) {
    if (!record || !this.isModerator || this.state !== 'joined') return;
    if (!record.identity || !this.knownAdmitted.has(record.identity)) return;
    console.info('[huizhen] admitting', record.identity, 'again (was in the call before)');
    this.sig.request({ type: 'admit', participant_id: record.id }).catch(() => {
      // admitted by someone else meanwhile, or gone: nothing to do
    });
  }

  // ---- moderation and chat (docs/protocol.md, "Lobby, hold and moderation", "Chat") -------

  /** Send a message to the server; false when not connected. */
  sendMessage(msg) {
    if (!this.sig || this.state !== 'joined') return false;
    return this.sig.send(msg);
  }

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
  }

  admit(participantId) {
    return this.sendMessage({ type: 'admit', participant_id: participantId });
  }

  deny(participantId) {
    const record = this.lobby[participantId];
    if (record) this.knownAdmitted.delete(record.identity);
    return this.sendMessage({ type: 'deny', participant_id: participantId });
  }

  hold(participantId, held) {
    return this.sendMessage({ type: 'hold', participant_id: participantId, held: !!held });
  }

  muteParticipant(participantId, kind = 'audio') {
    return this.sendMessage({ type: 'mute_participant', participant_id: participantId, kind });
  }

  remove(participantId) {
    const record = this.participants[participantId] || this.lobby[participantId];
    if (record) this.knownAdmitted.delete(record.identity);
    return this.sendMessage({ type: 'remove', participant_id: participantId });
  }

  endRoom(reason) {
    const msg = { type: 'end_room' };
    if (reason) msg.reason = reason;
    return this.sendMessage(msg);
  }

  /** A chat message; it comes back from the server (to everyone, us included) as `chat`. */
  sendChat(text) {
    const clean = String(text || '').trim().slice(0, 2000);
    if (!clean) return false;
    // no `id`: the echo must reach the 'chat' handler, not a pending request
    return this.sendMessage({ type: 'chat', text: clean });
  }

  /** Ask for an invitation link: resolves with {join_url, role, identity, expires_at}. */
  async createInvite(role, name) {
    if (!this.sig || this.state !== 'joined') throw new SignalingError('disconnected', 'offline');
    const msg = { type: 'create_invite', role };
    if (name) msg.name = name;
    return this.sig.request(msg);
  }

  // ---- screen share: a second publish connection with one video track (source "screen") --

  get isSharingScreen() {
    return !!this.screen;
  }

  /** Start sending a screen (a MediaStream from getDisplayMedia). */
  async startScreenShare(stream) {
    const track = stream.getVideoTracks()[0];
    if (!track) throw new Error('no video track to share');
    if (this.screen) this.stopScreenShare();
    try {
      track.contentHint = 'detail';
    } catch {
      // not supported: fine
    }
    this.screen = { track, trackId: null, mid: null };
    // "Stop sharing" in the browser's own bar
    track.addEventListener('ended', () => {
      if (this.screen && this.screen.track === track) this.stopScreenShare();
    });
    this.emit('local-updated');
    const gen = this.gen;
    try {
      if (this.state === 'joined' && this.admission === 'active') await this.negotiateScreen(gen);
    } catch (err) {
      if (this.screen && this.screen.track === track) this.stopScreenShare();
      throw err;
    }
  }

  stopScreenShare() {
    const screen = this.screen;
    if (!screen) return;
    this.screen = null;
    if (screen.trackId) this.sendMessage({ type: 'unpublish', track_id: screen.trackId });
    const pc = this.pcs.screen;
    if (pc) {
      pc.onconnectionstatechange = null;
      pc.close();
    }
    this.pcs.screen = null;
    screen.track.stop();
    this.emit('local-updated');
  }

  async negotiateScreen(gen) {
    const screen = this.screen;
    const pc = new RTCPeerConnection({ iceServers: this.iceServers });
    this.pcs.screen = pc;
    pc.onconnectionstatechange = () => this.onPcState(gen, pc, 'screen');
    const transceiver = pc.addTransceiver(screen.track, {
      direction: 'sendonly',
      streams: [new MediaStream([screen.track])],
    });
    preferVideoCodec(transceiver, this.videoCodec);
    await pc.setLocalDescription(await pc.createOffer());
    await waitForIceGathering(pc);
    if (gen !== this.gen || this.screen !== screen) {
      pc.close();
      return;
    }
    const answer = await this.sig.request({
      type: 'publish',
      sdp: pc.localDescription.sdp,
      tracks: [{ mid: transceiver.mid, kind: 'video', source: 'screen', muted: false }],
    });
    if (gen !== this.gen || this.screen !== screen) {
      // stopped meanwhile: take it down again
      const entry = (answer.tracks || [])[0];
      if (entry && gen === this.gen) this.sendMessage({ type: 'unpublish', track_id: entry.track_id });
      pc.close();
      return;
    }
    await pc.setRemoteDescription({ type: 'answer', sdp: answer.sdp });
    const entry = (answer.tracks || []).find((e) => String(e.mid) === String(transceiver.mid));
    screen.trackId = entry ? entry.track_id : null;
    screen.mid = transceiver.mid;
    this.emit('local-updated');
  }

  onTrackPublished({ track }) {
    if (!track || !track.participant_id) return;
    if (this.me && track.participant_id === this.me.id) return;
    if (this.departed.has(track.participant_id)) return;
    const record = this.ensureParticipant(track.participant_id);
    record.tracks[track.id] = trackRecord(track);
    this.emit('participant-updated', record);
  }

  onTrackUnpublished({ track_id: trackId, participant_id: pid }) {
    for (const [mid, a] of [...this.attached]) if (a.trackId === trackId) this.detachMid(mid);
    const record = this.participants[pid];
    if (record && record.tracks[trackId]) {
      delete record.tracks[trackId];
      this.emit('participant-updated', record);
    }
  }

  onTrackMuted({ track_id: trackId, participant_id: pid, muted }) {
    if (this.me && pid === this.me.id) return; // our own mute, echoed
    const record = this.participants[pid];
    if (!record) return;
    const tr = record.tracks[trackId];
    if (tr) {
      tr.muted = !!muted;
    } else {
      // not announced (yet): remember the state; kind/source are filled by the offer mapping
      const att = [...this.attached.values()].find((a) => a.trackId === trackId);
      record.tracks[trackId] = {
        id: trackId,
        kind: att ? att.kind : null,
        source: att ? att.source : null,
        muted: !!muted,
      };
    }
    this.emit('participant-updated', record);
  }

  /** The record for id, creating a placeholder if media or a track arrives before the join. */
  ensureParticipant(id) {
    if (!this.participants[id]) {
      this.participants[id] = makeParticipant({ id });
      this.emit('participant-added', this.participants[id]);
    }
    return this.participants[id];
  }

  // ---- publish connection -------------------------------------------------------------------

  async publish(gen) {
    if (this.pcs.publish) return; // already sending
    const grants = (this.me && this.me.grants) || {};
    const items = [];
    const a = this.local.audio;
    const v = this.local.video;
    if (a && grants.publish_audio && a.track.readyState === 'live') items.push(a);
    if (v && grants.publish_video && v.track.readyState === 'live') items.push(v);
    if (items.length === 0) return; // nothing to send: receive only

    for (let attempt = 1; attempt <= 2; attempt++) {
      try {
        await this.negotiatePublish(gen, items);
        return;
      } catch (err) {
        if (gen !== this.gen) return;
        const pc = this.pcs.publish;
        if (pc) pc.close();
        this.pcs.publish = null;
        const code = err instanceof SignalingError ? err.code : null;
        console.warn('[huizhen] publish failed', code, err.message);
        // bad_sdp: "the connection it was for is discarded; retry" (docs/protocol.md)
        if (code === 'bad_sdp' && attempt < 2) continue;
        if (code === 'disconnected') return; // the reconnect publishes again
        if (code === 'not_admitted') return; // sent again once we are let in / back from hold
        this.emit('notice', {
          key: 'publish_failed',
          code,
          message: err.message,
          level: 'error',
        });
        return;
      }
    }
  }

  async negotiatePublish(gen, items) {
    const pc = new RTCPeerConnection({ iceServers: this.iceServers });
    this.pcs.publish = pc;
    pc.onconnectionstatechange = () => this.onPcState(gen, pc, 'publish');

    const streams = this.localStream ? [this.localStream] : [];
    const entries = items.map((item) => {
      const init = { direction: 'sendonly', streams };
      if (item.kind === 'video' && item.source === 'camera' && this.simulcast) {
        // the room asks for layers (many viewers): each gets the one its link can take
        init.sendEncodings = SIMULCAST_ENCODINGS.map((e) => ({ ...e }));
      }
      let transceiver;
      try {
        transceiver = pc.addTransceiver(item.track, init);
      } catch (err) {
        if (!init.sendEncodings) throw err;
        // a browser without simulcast for this codec: one encoding, viewers still get video
        console.warn('[huizhen] simulcast refused, sending one layer:', err && err.message);
        delete init.sendEncodings;
        transceiver = pc.addTransceiver(item.track, init);
      }
      if (item.kind === 'video') preferVideoCodec(transceiver, this.videoCodec);
      return { item, transceiver };
    });

    await pc.setLocalDescription(await pc.createOffer());
    await waitForIceGathering(pc);
    if (gen !== this.gen) return;

    // every m-line, with its mid (assigned by setLocalDescription)
    const tracks = entries.map(({ item, transceiver }) => ({
      mid: transceiver.mid,
      kind: item.kind,
      source: item.source,
      muted: item.muted,
    }));
    const answer = await this.sig.request({
      type: 'publish',
      sdp: pc.localDescription.sdp,
      tracks,
    });
    if (gen !== this.gen) return;
    await pc.setRemoteDescription({ type: 'answer', sdp: answer.sdp });
    if (gen !== this.gen) return;

    const byMid = new Map(entries.map((e, i) => [e.transceiver.mid, { ...e, sent: tracks[i] }]));
    for (const entry of answer.tracks || []) {
      const e = byMid.get(String(entry.mid));
      if (!e) continue;
      e.item.trackId = entry.track_id;
      e.item.mid = e.transceiver.mid;
      e.item.sender = e.transceiver.sender;
      e.item.sentMuted = e.sent.muted;
    }
    // the user may have pressed mute while we were negotiating
    for (const item of items) {
      // the camera may also have been flipped meanwhile
      if (item.sender && item.sender.track !== item.track) await item.sender.replaceTrack(item.track);
      this.syncMute(item);
    }
    this.emit('local-updated');
  }

  onPcState(gen, pc, which) {
    if (gen !== this.gen || this.pcs[which] !== pc) return;
    console.info(`[huizhen] ${which} connection: ${pc.connectionState}`);
    // no ICE restart in protocol v1: a failed connection means joining again
    if (pc.connectionState === 'failed') this.forceReconnect('media_connection_failed');
  }

  // ---- subscribe connection -----------------------------------------------------------------

  /** Offers are handled strictly one after another. */
  enqueueOffer(msg, gen) {
    this.offerQueue = this.offerQueue
      .then(() => this.handleOffer(msg, gen))
      .catch((err) => {
        if (gen !== this.gen || this.isTerminal) return;
        // The server waits for our answer before offering again, so an offer we cannot answer
        // would stall our media for good: start over with a fresh session instead.
        console.error('[huizhen] could not answer subscriber_offer', msg.seq, err);
        this.forceReconnect('media_connection_failed');
      });
  }

  createSubscribePc(gen) {
    const pc = new RTCPeerConnection({ iceServers: this.iceServers });
    this.pcs.subscribe = pc;
    pc.onconnectionstatechange = () => this.onPcState(gen, pc, 'subscribe');
    // fires during setRemoteDescription, after this.midMap was set for the offer
    pc.ontrack = (ev) => {
      if (gen === this.gen && this.pcs.subscribe === pc) this.reconcileTransceiver(ev.transceiver);
    };
    return pc;
  }

  async handleOffer(msg, gen) {
    if (gen !== this.gen) return;
    this.midMap = new Map((msg.tracks || []).map((t) => [String(t.mid), t]));

    let pc = this.pcs.subscribe;
    const first = !pc;
    if (!pc) pc = this.createSubscribePc(gen);
    try {
      await pc.setRemoteDescription({ type: 'offer', sdp: msg.sdp });
    } catch (err) {
      if (first) throw err;
      // The server may have started a new connection (e.g. after rejecting our answer as
      // bad_sdp): follow it with a new one of ours.
      console.warn('[huizhen] offer does not fit the current connection; starting a new one', err);
      pc.onconnectionstatechange = null;
      pc.ontrack = null;
      pc.close();
      for (const mid of [...this.attached.keys()]) this.detachMid(mid);
      pc = this.createSubscribePc(gen);
      await pc.setRemoteDescription({ type: 'offer', sdp: msg.sdp });
    }
    if (gen !== this.gen) return;
    await pc.setLocalDescription(await pc.createAnswer());
    // Complete right away on later offers (same ICE session); needed on the first.
    await waitForIceGathering(pc);
    if (gen !== this.gen) return;
    this.sig.send({ type: 'subscriber_answer', seq: msg.seq, sdp: pc.localDescription.sdp });
    this.reconcile(pc);
  }

  /**
   * Make the attachments match the latest offer's mapping. An m-line can be reused for another
   * track without `ontrack` firing again (its receiver track stays the same object, only the
   * media changes), so after every offer we walk all transceivers rather than rely on ontrack.
   */
  reconcile(pc) {
    const present = new Set();
    for (const transceiver of pc.getTransceivers()) {
      if (transceiver.mid === null) continue;
      present.add(transceiver.mid);
      this.reconcileTransceiver(transceiver);
    }
    for (const mid of [...this.attached.keys()]) if (!present.has(mid)) this.detachMid(mid);
  }

  reconcileTransceiver(transceiver) {
    const mid = transceiver.mid;
    if (mid === null || mid === undefined) return;
    const info = this.midMap.get(String(mid));
    const current = this.attached.get(mid);
    const track = transceiver.receiver && transceiver.receiver.track;
    const stopped = transceiver.stopped || transceiver.currentDirection === 'stopped';
    if (!info || !track || stopped || this.departed.has(info.participant_id)) {
      if (current) this.detachMid(mid);
      return;
    }
    if (
      current &&
      current.trackId === info.track_id &&
      current.participantId === info.participant_id &&
      current.track === track
    ) {
      return; // unchanged
    }
    if (current) this.detachMid(mid);

    const attachment = {
      mid,
      participantId: info.participant_id,
      trackId: info.track_id,
      kind: info.kind || track.kind,
      source: info.source || (track.kind === 'audio' ? 'microphone' : 'camera'),
      track,
    };
    this.attached.set(mid, attachment);
    const record = this.ensureParticipant(info.participant_id);
    if (!record.tracks[info.track_id]) {
      record.tracks[info.track_id] = {
        id: info.track_id,
        kind: attachment.kind,
        source: attachment.source,
        muted: false,
      };
    } else {
      const tr = record.tracks[info.track_id];
      tr.kind = tr.kind || attachment.kind;
      tr.source = tr.source || attachment.source;
    }
    if (!record.receiving.includes(info.track_id)) record.receiving.push(info.track_id);
    this.emit('remote-track', attachment);
    this.emit('participant-updated', record);
  }

  detachMid(mid) {
    const attachment = this.attached.get(mid);
    if (!attachment) return;
    this.attached.delete(mid);
    const record = this.participants[attachment.participantId];
    if (record) record.receiving = record.receiving.filter((id) => id !== attachment.trackId);
    this.emit('remote-track-removed', attachment);
    if (record) this.emit('participant-updated', record);
  }
}
