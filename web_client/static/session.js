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

import { CLOSE_STALE, Signaling, SignalingError } from './signaling.js';

const ICE_GATHER_TIMEOUT_MS = 10000;
const RECONNECT_BASE_MS = 500;
const RECONNECT_MAX_MS = 10000;
const RECONNECT_GIVE_UP_MS = 5 * 60 * 1000;
const LEAVE_CLOSE_DELAY_MS = 1500;

const TERMINAL = new Set(['left', 'ended', 'failed']);

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
    this.pcs = { publish: null, subscribe: null };

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
    await this.publish(gen);
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
    sig.on('room_ended', live(() => this.finish('ended', { key: 'ended' })));
    sig.on('error', live((m) => this.onServerError(m)));
    sig.on('close', live((ev) => this.onSocketClosed(ev)));
  }

  applyJoined(j) {
    this.room = j.room || null;
    this.me = j.me || null;
    this.iceServers = Array.isArray(j.ice_servers) ? j.ice_servers : [];
    this.videoCodec = j.video_codec || 'VP8';
    this.heartbeatS = Number(j.heartbeat_s) > 0 ? Number(j.heartbeat_s) : 3;

    this.participants = {};
    for (const p of j.participants || []) {
      if (this.me && p.id === this.me.id) continue;
      this.participants[p.id] = makeParticipant(p);
      this.emit('participant-added', this.participants[p.id]);
    }

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
    if (code === 4010) {
      this.finish('ended', { key: 'ended' });
      return;
    }
    if (code === 4009) {
      // the same identity joined from another tab or device: rejoining by ourselves would take
      // the call back from it, so let the user decide
      this.finish('failed', { key: 'replaced', code: 'replaced', rejoin: true });
      return;
    }
    if ((code === 4001 || code === 4004) && this.state === 'joining') {
      // normally the `error` reply came first and ended the session; this is the fallback
      this.finish('failed', { key: 'error_generic', code: String(code) });
      return;
    }
    if (code === 1000) {
      // The server closed us on purpose (it does so after `leave`, and after replacing this
      // session with a newer one of the same identity). Rejoining by ourselves could take the
      // call away from the participant's other tab or device, so let the user decide.
      this.finish('failed', { key: 'disconnected', code: 'closed', rejoin: true });
      return;
    }
    // network loss, server restart (1001), stale connection (4000), …: join again
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
    const delay = Math.min(RECONNECT_BASE_MS * 2 ** this.reconnectAttempts, RECONNECT_MAX_MS);
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
    for (const which of ['publish', 'subscribe']) {
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
    this.participants = {};
    this.emit('participants-reset');
    this.emit('local-updated');
  }

  /** Leave the consultation (the Leave button). */
  leave() {
    if (this.isTerminal) return;
    const sig = this.sig;
    if (sig && this.state === 'joined') sig.send({ type: 'leave' });
    this.finish('left', { key: 'left', rejoin: true }, { keepSocket: true });
    // the server closes the socket (1000) after `leave`; close it ourselves if it does not
    if (sig) setTimeout(() => sig.close(1000, 'left'), LEAVE_CLOSE_DELAY_MS);
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
    console.warn('[huizhen] server error', msg.code, msg.message, msg.ref ?? '');
    this.emit('notice', { code: msg.code, message: msg.message, level: 'error' });
  }

  onParticipantJoined({ participant }) {
    if (!participant || !participant.id || (this.me && participant.id === this.me.id)) return;
    this.departed.delete(participant.id);
    const existing = this.participants[participant.id];
    const record = makeParticipant(participant);
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
      const transceiver = pc.addTransceiver(item.track, { direction: 'sendonly', streams });
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
