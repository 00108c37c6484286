// Huizhen web client: the Session's media — our own tracks, the publish connection (camera and
// microphone), the screen share, and the subscribe connection (the server's offers, mapped
// m-line by m-line onto participants). Methods of Session (session.js), mixed into its
// prototype; see session.js for the protocol and the events.

import { SignalingError } from './signaling.js';

const ICE_GATHER_TIMEOUT_MS = 10000;
const RELAY_GRACE_MS = 700; // after the first relay candidate (see waitForIceGathering)

/**
 * Camera simulcast layers, lowest first (the server's convention): half size for weak links
 * and small tiles, full size for the rest. Chromium sends two layers for a 640x480 camera.
 */
const SIMULCAST_ENCODINGS = [
  { rid: 'l', scaleResolutionDownBy: 2, maxBitrate: 200000 },
  { rid: 'h', scaleResolutionDownBy: 1, maxBitrate: 900000 },
];

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
      clearTimeout(grace);
      pc.removeEventListener('icegatheringstatechange', onState);
      pc.removeEventListener('icecandidate', onCandidate);
      resolve(complete);
    };
    const onState = () => {
      if (pc.iceGatheringState === 'complete') done(true);
    };
    // a null candidate also marks the end of gathering (some browsers fire it first). Behind a
    // firewall that drops UDP (or TCP to some TURN port) gathering only ends when those
    // allocations time out; once the relay has given us a candidate, the others that are
    // coming have RELAY_GRACE_MS more, and what we have is enough to connect.
    let grace = null;
    const onCandidate = (ev) => {
      if (!ev.candidate) done(true);
      else if (!grace && / typ relay /.test(ev.candidate.candidate)) {
        grace = setTimeout(() => done(false), RELAY_GRACE_MS);
      }
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

export const mediaMethods = {
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
  },

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
  },

  /** Mute or unmute our microphone ('audio') or camera ('video'). */
  setMuted(kind, muted) {
    const item = this.local[kind];
    if (!item) return;
    item.muted = !!muted;
    item.track.enabled = !item.muted;
    this.syncMute(item);
    this.emit('local-updated');
  },

  /** Tell the server when the muted state differs from what it last heard. */
  syncMute(item) {
    if (!item.trackId || item.sentMuted === item.muted || this.state !== 'joined') return;
    if (this.sig && this.sig.send({ type: 'mute', track_id: item.trackId, muted: item.muted })) {
      item.sentMuted = item.muted;
    }
  },

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
    // in the lobby the sender stays empty (attachTracks() once admitted)
    if (item.sender && !this.publishStandby) await item.sender.replaceTrack(track);
    this.emit('local-updated');
  },

  stopLocalTracks() {
    for (const item of [this.local.audio, this.local.video]) {
      if (item) item.track.stop();
    }
    if (this.screen) this.screen.track.stop();
    this.screen = null;
  },

  // ---- screen share: a second publish connection with one video track (source "screen") --

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
  },

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
  },

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
  },

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
  },

  async negotiatePublish(gen, items) {
    const pc = new RTCPeerConnection({ iceServers: this.iceServers });
    this.pcs.publish = pc;
    // In the lobby the connection is made with senders that have no track: nothing is sent
    // until the doctor admits us, and then only the tracks are attached (instant admission).
    const standby = this.admission === 'lobby';
    this.publishStandby = standby;
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
        transceiver = pc.addTransceiver(standby ? item.kind : item.track, init);
      } catch (err) {
        if (!init.sendEncodings) throw err;
        // a browser without simulcast for this codec: one encoding, viewers still get video
        console.warn('[huizhen] simulcast refused, sending one layer:', err && err.message);
        delete init.sendEncodings;
        transceiver = pc.addTransceiver(standby ? item.kind : item.track, init);
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
    if (standby && this.admission === 'lobby') return; // attachTracks() once admitted
    await this.attachTracks(items);
  },

  /** Put our tracks on the negotiated senders (after the lobby: media starts at once). */
  async attachTracks(items = [this.local.audio, this.local.video]) {
    this.publishStandby = false;
    // the user may have pressed mute while we were negotiating
    for (const item of items) {
      if (!item) continue;
      // the camera may also have been flipped meanwhile
      if (item.sender && item.sender.track !== item.track) await item.sender.replaceTrack(item.track);
      this.syncMute(item);
    }
    this.emit('local-updated');
  },

  onPcState(gen, pc, which) {
    if (gen !== this.gen || this.pcs[which] !== pc) return;
    console.info(`[huizhen] ${which} connection: ${pc.connectionState}`);
    // No ICE restart in protocol v1 (the SFU's ICE has none): a failed connection means joining
    // again, which is the restart — new ICE credentials, fresh TURN credentials from `joined`,
    // and every path tried again in order: UDP, then the relay over UDP, TCP, TLS.
    if (pc.connectionState === 'failed') this.forceReconnect('media_connection_failed');
  },

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
  },

  createSubscribePc(gen) {
    const pc = new RTCPeerConnection({ iceServers: this.iceServers });
    this.pcs.subscribe = pc;
    pc.onconnectionstatechange = () => this.onPcState(gen, pc, 'subscribe');
    // fires during setRemoteDescription, after this.midMap was set for the offer
    pc.ontrack = (ev) => {
      if (gen === this.gen && this.pcs.subscribe === pc) this.reconcileTransceiver(ev.transceiver);
    };
    return pc;
  },

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
  },

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
  },

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
  },

  detachMid(mid) {
    const attachment = this.attached.get(mid);
    if (!attachment) return;
    this.attached.delete(mid);
    const record = this.participants[attachment.participantId];
    if (record) record.receiving = record.receiving.filter((id) => id !== attachment.trackId);
    this.emit('remote-track-removed', attachment);
    if (record) this.emit('participant-updated', record);
  },
};
