// Huizhen web client: the signalling WebSocket (docs/protocol.md, version 1).
//
// * send(msg): fire and forget.
// * request(msg): adds an `id`, resolves with the reply that carries the same `ref`,
//   rejects with a SignalingError when the reply is an `error` (or on timeout / socket loss).
// * on(type, fn): server messages by `type` ('*' for all). Errors that answer no pending
//   request arrive as type 'error'. on('close', fn) gets {code, reason}.
// * startHeartbeat(s): app-level `ping` every s seconds. Any message from the server counts as
//   a sign of life; after STALE_FACTOR × s of silence the socket is declared dead and a
//   synthetic close (code 4000, reason 'stale') is emitted at once, because a browser can take a
//   long time to notice a connection that vanished without a FIN.

const REQUEST_TIMEOUT_MS = 20000;
const STALE_FACTOR = 3;
const MIN_STALE_MS = 6000;

export const CLOSE_STALE = 4000;

export class SignalingError extends Error {
  /**
   * @param {string} code   server error code (docs/protocol.md) or a local one:
   *                        'timeout', 'disconnected'
   * @param {string} message
   * @param {string|undefined} ref
   * @param {object|undefined} error  the whole `error` message (its extra facts, e.g. opens_at)
   */
  constructor(code, message, ref, error) {
    super(message || code);
    this.name = 'SignalingError';
    this.code = code;
    this.ref = ref;
    this.error = error || null;
  }
}

export class Signaling {
  /** @param {string} url  ws:// or wss:// URL of /ws/{room_id} */
  constructor(url) {
    this.url = url;
    this.ws = null;
    this.nextId = 1;
    this.pending = new Map(); // id -> {resolve, reject, timer}
    this.handlers = new Map(); // type -> Set<fn>
    this.closed = false;
    this.heartbeatTimer = null;
    this.lastReceived = 0;
    this.rttMs = null;
  }

  /** Open the socket. Resolves once open; rejects if it closes before opening. */
  connect() {
    return new Promise((resolve, reject) => {
      let ws;
      try {
        ws = new WebSocket(this.url);
      } catch (err) {
        reject(new SignalingError('disconnected', String(err)));
        this.finish(1006, String(err));
        return;
      }
      this.ws = ws;
      let opened = false;
      ws.onopen = () => {
        opened = true;
        this.lastReceived = Date.now();
        resolve();
      };
      ws.onmessage = (ev) => this.onFrame(ev.data);
      ws.onerror = () => {
        // the close event follows with the details
      };
      ws.onclose = (ev) => {
        if (!opened) reject(new SignalingError('disconnected', `WebSocket closed (${ev.code})`));
        this.finish(ev.code, ev.reason);
      };
    });
  }

  get isOpen() {
    return !this.closed && this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  /** Register a handler for a server message type ('*' for every message, 'close'). */
  on(type, fn) {
    if (!this.handlers.has(type)) this.handlers.set(type, new Set());
    this.handlers.get(type).add(fn);
    return () => this.handlers.get(type)?.delete(fn);
  }

  emit(type, msg) {
    for (const key of [type, '*']) {
      if (key === '*' && type === 'close') continue;
      for (const fn of this.handlers.get(key) || []) {
        try {
          fn(msg);
        } catch (err) {
          console.error(`[huizhen] handler for ${type} failed`, err);
        }
      }
    }
  }

  /** Send a message; returns false when the socket is not open. */
  send(msg) {
    if (!this.isOpen) return false;
    this.ws.send(JSON.stringify(msg));
    return true;
  }

  /** Send a message with a fresh `id` and wait for the reply carrying it as `ref`. */
  request(msg, timeoutMs = REQUEST_TIMEOUT_MS) {
    const id = String(this.nextId++);
    return new Promise((resolve, reject) => {
      if (!this.isOpen) {
        reject(new SignalingError('disconnected', 'not connected'));
        return;
      }
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new SignalingError('timeout', `no reply to ${msg.type}`, id));
      }, timeoutMs);
      this.pending.set(id, { resolve, reject, timer });
      this.send({ ...msg, id });
    });
  }

  onFrame(data) {
    this.lastReceived = Date.now();
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      console.warn('[huizhen] ignoring a non-JSON frame');
      return;
    }
    if (!msg || typeof msg !== 'object' || typeof msg.type !== 'string') return;

    if (msg.type === 'pong' && typeof msg.t === 'number') this.rttMs = Date.now() - msg.t;

    // a reply to one of our requests?
    if (msg.ref !== undefined && msg.ref !== null && this.pending.has(String(msg.ref))) {
      const waiter = this.pending.get(String(msg.ref));
      this.pending.delete(String(msg.ref));
      clearTimeout(waiter.timer);
      if (msg.type === 'error') {
        waiter.reject(new SignalingError(msg.code, msg.message, msg.ref, msg));
      } else {
        waiter.resolve(msg);
      }
      return;
    }
    this.emit(msg.type, msg);
  }

  /** App-level ping every `seconds` (joined.heartbeat_s), plus the staleness check. */
  startHeartbeat(seconds) {
    this.stopHeartbeat();
    const periodMs = Math.max(0.5, Number(seconds) || 3) * 1000;
    const staleMs = Math.max(MIN_STALE_MS, STALE_FACTOR * periodMs);
    this.lastReceived = Date.now();
    this.heartbeatTimer = setInterval(() => {
      if (this.closed) return;
      if (Date.now() - this.lastReceived > staleMs) {
        console.warn('[huizhen] no message from the server for', staleMs, 'ms: connection is dead');
        this.close(CLOSE_STALE, 'stale');
        return;
      }
      this.send({ type: 'ping', t: Date.now() });
    }, periodMs);
  }

  stopHeartbeat() {
    if (this.heartbeatTimer !== null) clearInterval(this.heartbeatTimer);
    this.heartbeatTimer = null;
  }

  /**
   * Close the socket. The 'close' event is emitted at once (not when the browser gets round to
   * it), and only once.
   */
  close(code = 1000, reason = '') {
    if (this.ws) {
      try {
        this.ws.close(code, reason);
      } catch {
        // already closing
      }
    }
    this.finish(code, reason);
  }

  finish(code, reason) {
    if (this.closed) return;
    this.closed = true;
    this.stopHeartbeat();
    if (this.ws) {
      this.ws.onmessage = null;
      this.ws.onclose = null;
    }
    for (const [id, waiter] of this.pending) {
      clearTimeout(waiter.timer);
      waiter.reject(new SignalingError('disconnected', `connection closed (${code})`, id));
    }
    this.pending.clear();
    this.emit('close', { code, reason });
  }
}
