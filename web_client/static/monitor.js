// Huizhen web client: what the peer connections tell us while in the call.
//
// * Who is making sound now (the ring on their tile): the audio level of every remote
//   microphone (receiver getSynchronizationSources().audioLevel on the subscribe connection —
//   cheap, no decoding of our own), smoothed. The active speaker (the big picture) is the
//   server's decision (active_speaker), the same for everyone in the room.
// * Connection quality: getStats() every 2 s — the selected candidate pair's
//   currentRoundTripTime and packet loss (received: inbound-rtp packetsLost/packetsReceived;
//   sent: remote-inbound-rtp fractionLost) → good | fair | poor — and the server's own view,
//   connection_quality (docs/protocol.md: loss both ways, round trip, a video paused for the
//   network): the indicator shows the worse of the two while the server's is fresh.

const SPEAKER_TICK_MS = 250;
const QUALITY_TICK_MS = 2000;
const SPEAKING_LEVEL = 0.03; // audioLevel (0..1, linear) above which someone is talking
const SERVER_FRESH_MS = 10000; // the server sends connection_quality only when it changes,
// so its last report stands this long after the last change … and is renewed by the next
const LEVELS = ['unknown', 'good', 'fair', 'poor'];

/** good | fair | poor from round trip time (s) and loss (%); unknown without data. */
export function qualityLevel(rttS, lossPct) {
  if (rttS === null && lossPct === null) return 'unknown';
  const rtt = rttS ?? 0;
  const loss = lossPct ?? 0;
  if (rtt < 0.3 && loss < 2) return 'good';
  if (rtt < 0.6 && loss < 8) return 'fair';
  return 'poor';
}

export class CallMonitor {
  /**
   * @param {{session: object, onSpeakers: (info) => void, onQuality: (q) => void}} options
   *   onSpeakers({speaking: Set}) — the participant ids whose microphones carry sound now
   *   onQuality({level, rtt_ms, loss_pct})
   */
  constructor({ session, onSpeakers, onQuality }) {
    this.session = session;
    this.onSpeakers = onSpeakers;
    this.onQuality = onQuality;
    this.levels = new Map(); // participant id -> smoothed level
    this.prevCounters = new Map(); // pc -> {lost, received}
    this.quality = { level: 'unknown', rtt_ms: null, loss_pct: null };
    this.server = null; // {at, report}: our latest connection_quality
    this.speakerTimer = setInterval(() => this.tickSpeakers(), SPEAKER_TICK_MS);
    this.qualityTimer = setInterval(() => {
      this.tickQuality().catch((err) => console.debug('[huizhen] stats failed', err));
    }, QUALITY_TICK_MS);
  }

  /** The server's connection_quality about us; applied at once. */
  serverReport(report) {
    this.server = { at: Date.now(), report };
    this.onQuality(this.combined());
  }

  /** The local reading, made worse by the server's fresh one (it sees both directions). */
  combined() {
    const local = this.quality;
    const server = this.server;
    if (!server || Date.now() - server.at > SERVER_FRESH_MS || server.report.level === 'unknown') {
      return local;
    }
    const r = server.report;
    const losses = [local.loss_pct, r.uplink && r.uplink.loss_pct, r.downlink && r.downlink.loss_pct]
      .filter((v) => typeof v === 'number');
    const worse = LEVELS.indexOf(r.level) > LEVELS.indexOf(local.level) ? r.level : local.level;
    return {
      level: worse,
      rtt_ms: local.rtt_ms ?? r.rtt_ms ?? null,
      loss_pct: losses.length ? Math.max(...losses) : null,
      server: r,
    };
  }

  stop() {
    clearInterval(this.speakerTimer);
    clearInterval(this.qualityTimer);
  }

  tickSpeakers() {
    const s = this.session;
    const pc = s.pcs.subscribe;
    const raw = new Map();
    if (pc && pc.connectionState !== 'closed') {
      for (const tr of pc.getTransceivers()) {
        const receiver = tr.receiver;
        if (!receiver || !receiver.track || receiver.track.kind !== 'audio') continue;
        const att = s.attached.get(tr.mid);
        if (!att) continue;
        let level = 0;
        try {
          for (const src of receiver.getSynchronizationSources()) {
            // only fresh values (the source may have stopped sending)
            // (per spec: timeOrigin-based; an implementation on another clock is not filtered)
            const age = performance.timeOrigin + performance.now() - src.timestamp;
            if (age < 1000 || Math.abs(age) > 3600e3) {
              level = Math.max(level, src.audioLevel || 0);
            }
          }
        } catch {
          // older browsers: no levels, no active speaker
        }
        const record = s.participants[att.participantId];
        const track = record && record.tracks[att.trackId];
        if (track && track.muted) level = 0;
        raw.set(att.participantId, Math.max(raw.get(att.participantId) || 0, level));
      }
    }
    const smoothed = new Map();
    for (const [pid, level] of raw) {
      const prev = this.levels.get(pid) || 0;
      // fast attack, slower release
      smoothed.set(pid, level > prev ? prev * 0.3 + level * 0.7 : prev * 0.7 + level * 0.3);
    }
    this.levels = smoothed;

    const speaking = new Set([...smoothed].filter(([, v]) => v > SPEAKING_LEVEL).map(([k]) => k));
    this.onSpeakers({ speaking });
  }

  async tickQuality() {
    const s = this.session;
    const pcs = [s.pcs.publish, s.pcs.subscribe].filter((pc) => pc && pc.connectionState !== 'closed');
    if (!pcs.length || s.state !== 'joined') {
      this.quality = { level: s.state === 'reconnecting' ? 'poor' : 'unknown', rtt_ms: null, loss_pct: null };
      this.server = null;
      this.onQuality(this.quality);
      return;
    }
    let rtt = null;
    let lossPct = null;
    for (const pc of pcs) {
      const stats = await pc.getStats();
      let selectedPair = null;
      const pairs = [];
      let lost = 0;
      let received = 0;
      stats.forEach((st) => {
        if (st.type === 'transport' && st.selectedCandidatePairId) {
          selectedPair = stats.get(st.selectedCandidatePairId) || null;
        }
        if (st.type === 'candidate-pair' && st.nominated && st.state === 'succeeded') pairs.push(st);
        if (st.type === 'inbound-rtp') {
          lost += Math.max(0, st.packetsLost || 0);
          received += st.packetsReceived || 0;
        }
        if (st.type === 'remote-inbound-rtp' && typeof st.fractionLost === 'number') {
          lossPct = Math.max(lossPct ?? 0, st.fractionLost * 100);
        }
      });
      const pair = selectedPair || pairs[0];
      if (pair && typeof pair.currentRoundTripTime === 'number') {
        rtt = Math.max(rtt ?? 0, pair.currentRoundTripTime);
      }
      const prev = this.prevCounters.get(pc);
      this.prevCounters.set(pc, { lost, received });
      if (prev) {
        const dLost = lost - prev.lost;
        const dRecv = received - prev.received;
        if (dLost + dRecv > 0) {
          lossPct = Math.max(lossPct ?? 0, (100 * Math.max(0, dLost)) / (dLost + dRecv));
        }
      }
    }
    this.quality = {
      level: qualityLevel(rtt, lossPct),
      rtt_ms: rtt === null ? null : Math.round(rtt * 1000),
      loss_pct: lossPct === null ? null : Math.round(lossPct * 10) / 10,
    };
    this.onQuality(this.combined());
  }
}
