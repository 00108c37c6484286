// Huizhen web client: the pre-call check, shown when a join link is opened.
//
// * camera preview and a microphone level meter (WebAudio analyser) on the stream the call
//   will use (so the browser asks for permission once);
// * a speaker test: a short generated chime, then "I heard it" / "No";
// * a connectivity check with a plain-words verdict:
//     (a) the server answers: GET /healthz timed, and a WebSocket to /ws/{room} opened and
//         closed again;
//     (b) a short WebRTC loop: POST /precheck {"sdp": offer} (Authorization: Bearer <token>)
//         with one data channel "echo"; the server echoes each message: 5 timestamped pings,
//         round-trip times measured, connection closed. A 404 means "could not test" (an
//         older server), never a failure. The loop uses the ICE servers of GET /precheck (the
//         room's TURN relay with credentials of its own), so it tries what the call will: UDP
//         first, then the relay over UDP, TCP, TLS; the path ICE chose is read from getStats()
//         and said in plain words ("your network only allows the secure relay…").
//
// Result (also window.huizhen.precheck): {verdict: good|weak|unreachable, http_ms, ws_ms,
// rtc: ok|failed|untested, rtt_ms: [..], lost, reasons: [..],
// path: direct|relay-udp|relay-tcp|relay-tls|null}.

import { t } from './i18n.js';
import { waitForIceGathering } from './session.js';

const HTTP_TIMEOUT_MS = 6000;
const WS_TIMEOUT_MS = 6000;
const RTC_GATHER_MS = 4000;
const RTC_OPEN_TIMEOUT_MS = 6000;
const PINGS = 5;
const PING_GAP_MS = 120;
const PING_WAIT_MS = 2500;

// verdict thresholds
const WEAK_RTT_MS = 400; // WebRTC round trip (median)
const WEAK_HTTP_MS = 1200; // HTTP/WebSocket set-up, when WebRTC could not be tested

function now() {
  return performance.now();
}

function withTimeout(promise, ms, onTimeout) {
  let timer;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise((resolve) => {
      timer = setTimeout(() => resolve(onTimeout()), ms);
    }),
  ]);
}

/** Time a GET /healthz (ms), or null when the server cannot be reached. */
export async function measureHttp() {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), HTTP_TIMEOUT_MS);
  const start = now();
  try {
    const resp = await fetch('/healthz', { cache: 'no-store', signal: controller.signal });
    if (!resp.ok) return null;
    await resp.text();
    return Math.round(now() - start);
  } catch {
    return null;
  } finally {
    clearTimeout(timer);
  }
}

/** Open a WebSocket to the room's signalling URL and close it; ms to open, or null. */
export function measureWebSocket(url) {
  return new Promise((resolve) => {
    const start = now();
    let ws;
    let done = false;
    const finish = (value) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      try {
        ws.close(1000, 'precheck');
      } catch {
        // not open
      }
      resolve(value);
    };
    const timer = setTimeout(() => finish(null), WS_TIMEOUT_MS);
    try {
      ws = new WebSocket(url);
    } catch {
      finish(null);
      return;
    }
    ws.onopen = () => finish(Math.round(now() - start));
    ws.onerror = () => finish(null);
    ws.onclose = () => finish(null);
  });
}

/** The ICE servers for the check (GET /precheck); none from an older server. */
async function checkIceServers(token) {
  try {
    const resp = await fetch('/precheck', {
      cache: 'no-store',
      headers: { Authorization: `Bearer ${token}` },
    });
    if (!resp.ok) return [];
    const body = await resp.json();
    return Array.isArray(body.ice_servers) ? body.ice_servers : [];
  } catch {
    return [];
  }
}

/**
 * How a connection's media goes, from its selected candidate pair: 'direct' (UDP to the
 * server), 'relay-udp' | 'relay-tcp' | 'relay-tls' (through the TURN relay, by how we reach it),
 * or null (not connected yet).
 */
export async function mediaPath(pc) {
  const stats = await pc.getStats();
  let pair = null;
  stats.forEach((s) => {
    if (s.type === 'transport' && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId) || pair;
  });
  if (!pair) {
    stats.forEach((s) => {
      if (!pair && s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') pair = s;
    });
  }
  const local = pair && stats.get(pair.localCandidateId);
  if (!local) return null;
  if (local.candidateType !== 'relay') return 'direct';
  if (local.relayProtocol === 'tls') return 'relay-tls';
  return local.relayProtocol === 'tcp' ? 'relay-tcp' : 'relay-udp';
}

/**
 * The WebRTC loop through the server. Returns
 * {rtc: 'ok', rtt_ms, lost, path} | {rtc: 'failed', why} | {rtc: 'untested', status} |
 * {rtc: 'link', code, message} (the server refused the token: a bad or expired link).
 */
export async function measureRtc(token) {
  if (!window.RTCPeerConnection) return { rtc: 'untested', status: 0 };
  // every server, UDP first: ICE itself falls back to the relay over TCP, then TLS
  const pc = new RTCPeerConnection({ iceServers: await checkIceServers(token) });
  try {
    const channel = pc.createDataChannel('echo', { ordered: true });
    await pc.setLocalDescription(await pc.createOffer());
    await waitForIceGathering(pc, RTC_GATHER_MS);
    let resp;
    try {
      resp = await fetch('/precheck', {
        method: 'POST',
        cache: 'no-store',
        headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${token}` },
        body: JSON.stringify({ sdp: pc.localDescription.sdp }),
      });
    } catch (err) {
      return { rtc: 'failed', why: `request failed: ${err}` };
    }
    if (resp.status === 404 || resp.status === 405 || resp.status === 501) {
      return { rtc: 'untested', status: resp.status };
    }
    let body = null;
    try {
      body = await resp.json();
    } catch {
      body = null;
    }
    if (!resp.ok) {
      const code = body && body.error && body.error.code;
      if ((resp.status === 401 || resp.status === 403) && code) {
        return { rtc: 'link', code, message: body.error.message };
      }
      return { rtc: 'untested', status: resp.status };
    }
    if (!body || typeof body.sdp !== 'string') return { rtc: 'untested', status: resp.status };
    await pc.setRemoteDescription({ type: 'answer', sdp: body.sdp });

    const opened = await withTimeout(
      new Promise((resolve) => {
        if (channel.readyState === 'open') resolve(true);
        channel.onopen = () => resolve(true);
        channel.onclose = () => resolve(false);
      }),
      RTC_OPEN_TIMEOUT_MS,
      () => false,
    );
    if (!opened) return { rtc: 'failed', why: 'no connection' };

    const sent = new Map();
    const rtts = [];
    let allBack;
    const back = new Promise((resolve) => {
      allBack = resolve;
    });
    channel.onmessage = (ev) => {
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch {
        return;
      }
      if (!msg || !sent.has(msg.n)) return;
      rtts.push(Math.round((now() - sent.get(msg.n)) * 10) / 10);
      sent.delete(msg.n);
      if (rtts.length === PINGS) allBack();
    };
    for (let n = 1; n <= PINGS; n++) {
      const at = now();
      sent.set(n, at);
      channel.send(JSON.stringify({ type: 'ping', n, t: Date.now() }));
      await new Promise((r) => setTimeout(r, PING_GAP_MS));
    }
    await withTimeout(back, PING_WAIT_MS, () => null);
    return { rtc: 'ok', rtt_ms: rtts, lost: PINGS - rtts.length, path: await mediaPath(pc) };
  } catch (err) {
    console.warn('[huizhen] precheck WebRTC loop failed', err);
    return { rtc: 'failed', why: String(err) };
  } finally {
    pc.close();
  }
}

function median(values) {
  if (!values.length) return null;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

/** good | weak | unreachable, with the reasons (for logs and tests). */
export function verdictFrom(result) {
  const reasons = [];
  if (result.ws_ms === null && result.http_ms === null) return { verdict: 'unreachable', reasons: ['server'] };
  if (result.ws_ms === null) return { verdict: 'unreachable', reasons: ['websocket'] };
  if (result.http_ms === null) reasons.push('http');
  if (result.rtc === 'ok') {
    if (result.lost >= 2) reasons.push('loss');
    const m = median(result.rtt_ms);
    if (m === null || m > WEAK_RTT_MS) reasons.push('rtt');
  } else if (result.rtc === 'failed') {
    reasons.push('webrtc');
  } else if (Math.max(result.http_ms || 0, result.ws_ms || 0) > WEAK_HTTP_MS) {
    reasons.push('slow');
  }
  const type = navigator.connection && navigator.connection.effectiveType;
  if (type === '2g' || type === 'slow-2g') reasons.push('2g');
  return { verdict: reasons.length ? 'weak' : 'good', reasons };
}

/** The whole connectivity check. Never throws. */
export async function checkConnectivity({ wsUrl, token }) {
  const [http, ws] = await Promise.all([measureHttp(), measureWebSocket(wsUrl)]);
  const result = { http_ms: http, ws_ms: ws, rtc: 'untested', rtt_ms: [], lost: null, path: null };
  if (http !== null || ws !== null) Object.assign(result, await measureRtc(token));
  return { ...result, ...verdictFrom(result) };
}

// ---- the page section --------------------------------------------------------------------------

/** Short chime: three rising notes, about one second. */
function playChime(ctx) {
  const notes = [523.25, 659.25, 783.99];
  const start = ctx.currentTime + 0.05;
  notes.forEach((freq, i) => {
    const osc = ctx.createOscillator();
    const gain = ctx.createGain();
    osc.type = 'sine';
    osc.frequency.value = freq;
    const t0 = start + i * 0.32;
    gain.gain.setValueAtTime(0.0001, t0);
    gain.gain.exponentialRampToValueAtTime(0.35, t0 + 0.03);
    gain.gain.exponentialRampToValueAtTime(0.0001, t0 + 0.3);
    osc.connect(gain).connect(ctx.destination);
    osc.start(t0);
    osc.stop(t0 + 0.32);
  });
  return (notes.length * 0.32 + 0.1) * 1000;
}

/** Short text for a device row from getLocalMedia's problem (the banner has the long one). */
function problemKey(device, problem) {
  if (problem === 'media_denied') return `pc_${device}_denied`;
  if (problem === 'media_busy') return `pc_${device}_busy`;
  if (problem === 'media_insecure') return 'pc_insecure';
  return `pc_${device}_none`;
}

/** What the check says about the path the media takes (i18n keys). */
const PATH_KEYS = {
  direct: 'pc_path_direct',
  'relay-udp': 'pc_path_relay_udp',
  'relay-tcp': 'pc_path_relay_tcp',
  'relay-tls': 'pc_path_relay_tls',
};

export class PrecheckView {
  /**
   * @param {{root: HTMLElement, wsUrl: string, token: string,
   *          onResult?: (result) => void, onLinkError?: (code, message) => void}} options
   */
  constructor({ root, wsUrl, token, onResult, onLinkError }) {
    this.root = root;
    this.wsUrl = wsUrl;
    this.token = token;
    this.onResult = onResult || (() => {});
    this.onLinkError = onLinkError || (() => {});
    this.result = null;
    this.stream = null;
    this.audioCtx = null;
    this.meterTimer = null;
    this.level = 0;
    this.heardMic = false;
    // i18n keys of what each row says, so that a language switch re-renders them
    this.rows = {
      camera: { status: 'pending', key: 'pc_camera_waiting' },
      mic: { status: 'pending', key: 'pc_mic_waiting' },
      speaker: { status: 'idle', key: 'pc_speaker_hint' },
      network: { status: 'pending', key: 'pc_net_checking' },
      path: { status: 'idle', key: null },
    };
    const $ = (sel) => root.querySelector(sel);
    this.el = {
      video: $('#precheck-video'),
      preview: $('.pc-preview'),
      meter: $('#mic-meter'),
      meterFill: $('#mic-meter .meter-fill'),
      speakerBtn: $('#btn-speaker-test'),
      speakerConfirm: $('#speaker-confirm'),
      heard: $('#btn-heard'),
      notHeard: $('#btn-not-heard'),
      verdict: $('#precheck-verdict'),
      path: $('#precheck-path'),
      retry: $('#btn-net-retry'),
    };
    this.el.speakerBtn.addEventListener('click', () => this.testSpeaker());
    this.el.heard.addEventListener('click', () => this.setRow('speaker', 'ok', 'pc_speaker_ok'));
    this.el.notHeard.addEventListener('click', () =>
      this.setRow('speaker', 'warn', 'pc_speaker_not_heard'),
    );
    this.el.retry.addEventListener('click', () => this.runConnectivity());
    // WebAudio may only start after a tap on phones
    this.resumeAudio = () => {
      if (this.audioCtx && this.audioCtx.state === 'suspended') this.audioCtx.resume().catch(() => {});
    };
    document.addEventListener('pointerdown', this.resumeAudio, true);
    this.render();
  }

  show() {
    this.root.hidden = false;
  }

  ensureAudio() {
    if (this.audioCtx) return this.audioCtx;
    const Ctx = window.AudioContext || window.webkitAudioContext;
    if (!Ctx) return null;
    try {
      this.audioCtx = new Ctx();
    } catch {
      this.audioCtx = null;
    }
    return this.audioCtx;
  }

  /** The camera/microphone stream (or null) and what went wrong getting it (an i18n key). */
  setStream(stream, problem) {
    this.stream = stream;
    const video = stream ? stream.getVideoTracks()[0] : null;
    const audio = stream ? stream.getAudioTracks()[0] : null;
    if (video) {
      this.el.video.srcObject = new MediaStream([video]);
      this.el.video.play().catch(() => {});
      this.el.preview.dataset.video = 'on';
      this.setRow('camera', 'ok', 'pc_camera_ok');
    } else {
      this.el.preview.dataset.video = 'off';
      this.setRow('camera', 'fail', problemKey('camera', problem));
    }
    if (audio) {
      this.setRow('mic', 'pending', 'pc_mic_speak');
      this.startMeter(audio);
    } else {
      this.setRow('mic', 'fail', problemKey('mic', problem));
    }
  }

  startMeter(track) {
    const ctx = this.ensureAudio();
    if (!ctx) return;
    // phones keep WebAudio suspended until the first tap: say so, or the bar never moves
    if (ctx.state === 'suspended') this.setRow('mic', 'pending', 'pc_mic_tap');
    ctx.addEventListener('statechange', () => {
      if (ctx.state === 'running' && this.rows.mic.key === 'pc_mic_tap') {
        this.setRow('mic', 'pending', 'pc_mic_speak');
      }
    });
    const source = ctx.createMediaStreamSource(new MediaStream([track]));
    const analyser = ctx.createAnalyser();
    analyser.fftSize = 1024;
    source.connect(analyser);
    const data = new Float32Array(analyser.fftSize);
    // a timer rather than requestAnimationFrame: it keeps going in a background tab
    this.meterTimer = setInterval(() => {
      analyser.getFloatTimeDomainData(data);
      let sum = 0;
      for (let i = 0; i < data.length; i++) sum += data[i] * data[i];
      const rms = Math.sqrt(sum / data.length);
      const db = rms > 0 ? 20 * Math.log10(rms) : -100;
      const level = Math.max(0, Math.min(1, (db + 60) / 50));
      // fast attack, slow release: easier to read
      this.level = level > this.level ? level : this.level * 0.85 + level * 0.15;
      const pct = Math.round(this.level * 100);
      this.el.meterFill.style.width = `${pct}%`;
      this.el.meter.setAttribute('aria-valuenow', String(pct));
      this.el.meter.dataset.level = String(pct);
      if (!this.heardMic && this.level > 0.25) {
        this.heardMic = true;
        this.setRow('mic', 'ok', 'pc_mic_ok');
      }
    }, 80);
  }

  async testSpeaker() {
    const ctx = this.ensureAudio();
    if (!ctx) {
      this.setRow('speaker', 'warn', 'pc_speaker_unavailable');
      return;
    }
    try {
      await ctx.resume();
    } catch {
      // played when it can
    }
    this.el.speakerBtn.disabled = true;
    this.setRow('speaker', 'playing', 'pc_speaker_playing');
    const ms = playChime(ctx);
    setTimeout(() => {
      this.el.speakerBtn.disabled = false;
      this.setRow('speaker', 'asking', 'pc_speaker_question');
    }, ms);
  }

  async runConnectivity() {
    this.el.retry.hidden = true;
    this.setRow('network', 'pending', 'pc_net_checking');
    const result = await checkConnectivity({ wsUrl: this.wsUrl, token: this.token });
    this.result = result;
    console.info('[huizhen] precheck', JSON.stringify(result));
    if (result.rtc === 'link') {
      this.onLinkError(result.code, result.message);
      return result;
    }
    const key = {
      good: 'pc_net_good',
      weak: 'pc_net_weak',
      unreachable: 'pc_net_unreachable',
    }[result.verdict];
    this.setRow('network', result.verdict, key);
    this.setRow('path', result.path || 'idle', PATH_KEYS[result.path] || null);
    this.el.retry.hidden = result.verdict === 'good';
    this.onResult(result);
    return result;
  }

  setRow(name, status, key) {
    this.rows[name] = { status, key };
    this.render();
  }

  render() {
    for (const [name, row] of Object.entries(this.rows)) {
      const li = this.root.querySelector(`#check-${name}`);
      if (!li) continue;
      li.dataset.status = row.status;
      const detail = li.querySelector('.check-detail');
      if (detail) detail.textContent = t(row.key);
    }
    this.el.speakerConfirm.hidden = !['asking', 'ok', 'warn'].includes(this.rows.speaker.status);
    if (this.el.path) {
      const path = this.rows.path;
      this.el.path.hidden = !path.key;
      this.el.path.dataset.path = path.status;
      this.el.path.textContent = path.key ? t(path.key) : '';
    }
    const net = this.rows.network;
    this.el.verdict.dataset.verdict = net.status;
    if (this.result && this.result.rtc) this.el.verdict.dataset.rtc = this.result.rtc;
  }

  /** Leaving the check: stop the meter and the audio graph (the stream itself goes on). */
  destroy() {
    clearInterval(this.meterTimer);
    this.meterTimer = null;
    document.removeEventListener('pointerdown', this.resumeAudio, true);
    if (this.audioCtx) this.audioCtx.close().catch(() => {});
    this.audioCtx = null;
    this.el.video.srcObject = null;
    this.root.hidden = true;
  }
}
