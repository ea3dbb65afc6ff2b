// pushgate.js: a small, dependency-free client for the pushgate WebSocket
// gateway. Works in browsers (as an ES module: import { PushgateClient }
// from "/pushgate.js") and in React Native (copy the file; it only needs
// WebSocket, TextEncoder/TextDecoder and setTimeout). No build step.
//
// Wire format (proto-spec/README.md): every message is one binary frame,
// a 4-byte big-endian action code followed by the payload. Built-in actions
// carry a JSON object; actions >= 1000 carry opaque bytes.

export const Actions = Object.freeze({
  HELLO: 1, PING: 2, PONG: 3, ERROR: 4, RECONNECT: 5,
  ADD_FRIEND: 110, FETCH_INFO: 111, DECLINE_FRIEND: 112, CANCEL_FRIEND_REQUEST: 113,
  PUSH: 200, FRIEND_REQUEST: 210, FRIEND_ACCEPTED: 211,
});

const NAMES = Object.fromEntries(Object.entries(Actions).map(([name, code]) => [code, name]));

/** Human name of an action code. */
export function actionName(code) {
  if (NAMES[code]) return NAMES[code];
  if (code >= 1000) return "APPLICATION";
  if (code >= 200 && code <= 299) return "PUSH_RANGE";
  return "UNKNOWN";
}

/** Close codes pushgate sends, and whether a client should reconnect. */
export const CloseCodes = Object.freeze({
  1000: { name: "NORMAL", reconnect: false },
  1001: { name: "GOING_AWAY", reconnect: true },
  1002: { name: "PROTOCOL_ERROR", reconnect: false },
  1003: { name: "UNSUPPORTED_DATA", reconnect: false },
  1006: { name: "ABNORMAL", reconnect: true },
  1009: { name: "MESSAGE_TOO_BIG", reconnect: false },
  1011: { name: "INTERNAL_ERROR", reconnect: true },
  1012: { name: "SERVICE_RESTART", reconnect: true },
  4000: { name: "IDLE_TIMEOUT", reconnect: true },
  4001: { name: "SLOW_CONSUMER", reconnect: true },
  4002: { name: "KICKED", reconnect: false },
  4003: { name: "TOKEN_EXPIRED", reconnect: true },
  4004: { name: "RATE_LIMITED", reconnect: true },
  4005: { name: "SESSION_REPLACED", reconnect: false },
});

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/**
 * Builds a frame. `payload`: a plain object (sent as JSON), a string (UTF-8),
 * a Uint8Array/ArrayBuffer (raw bytes) or undefined (empty).
 */
export function encodeFrame(action, payload) {
  let body;
  if (payload === undefined || payload === null) body = new Uint8Array(0);
  else if (payload instanceof Uint8Array) body = payload;
  else if (payload instanceof ArrayBuffer) body = new Uint8Array(payload);
  else if (typeof payload === "string") body = encoder.encode(payload);
  else body = encoder.encode(JSON.stringify(payload));
  const frame = new Uint8Array(4 + body.length);
  new DataView(frame.buffer).setUint32(0, action >>> 0, false);
  frame.set(body, 4);
  return frame;
}

/**
 * Decodes a frame: { action, name, bytes, json }. `json` is the parsed
 * payload for built-in actions (undefined for opaque or invalid payloads).
 * Throws on a message shorter than the 4-byte header.
 */
export function decodeFrame(data) {
  const bytes = data instanceof Uint8Array ? data : new Uint8Array(data);
  if (bytes.length < 4) throw new Error(`frame of ${bytes.length} bytes has no action header`);
  const action = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(0, false);
  const payload = bytes.subarray(4);
  let json;
  if (action < 1000 && payload.length > 0) {
    try { json = JSON.parse(decoder.decode(payload)); } catch (_) { json = undefined; }
  } else if (action < 1000) {
    json = {};
  }
  return { action, name: actionName(action), bytes: payload, json };
}

/** Full-jitter exponential backoff: random in [0, min(max, base * 2^attempt)]. */
export function backoffDelay(attempt, baseMs, maxMs) {
  const cap = Math.min(maxMs, baseMs * 2 ** Math.min(attempt, 20));
  return Math.floor(Math.random() * cap);
}

const isPushAction = (action) => (action >= 200 && action <= 299) || action >= 1000;

/**
 * A connection to pushgate with request/reply matching by action and `seq`
 * and automatic reconnect with jittered exponential backoff.
 *
 *   const client = new PushgateClient({ url: "wss://gw.example/ws", getToken: async () => fetchToken() });
 *   client.on("push", (frame) => console.log(frame.json));
 *   client.connect();
 *   const info = await client.request(Actions.FETCH_INFO, { user: "bob" });
 *
 * Events: "state" (idle|connecting|open|reconnecting|closed), "hello",
 * "frame" (every incoming frame), "push" (actions 200-299 and >= 1000),
 * "sent", "close" ({ code, reason, name, reconnectInMs, stopped }), "error".
 *
 * Options: `token` (static) or `getToken` (called before every connection
 * attempt, reconnects included); `reconnect`; `minDelayMs`/`maxDelayMs`
 * (backoff); `healthyAfterMs` (a connection must stay up this long after
 * HELLO before the backoff starts over); `maxAttemptsWithoutHello` (stop
 * after this many consecutive attempts that ended before HELLO; default
 * never); `requestTimeoutMs`; `WebSocketImpl`.
 */
export class PushgateClient {
  constructor({
    url, token, getToken,
    reconnect = true, minDelayMs = 500, maxDelayMs = 30000, requestTimeoutMs = 10000,
    healthyAfterMs = 10000, maxAttemptsWithoutHello = Infinity,
    WebSocketImpl = globalThis.WebSocket,
  }) {
    if (!url) throw new Error("url is required");
    this.url = url;
    // With a static token there is nothing to refresh after TOKEN_EXPIRED.
    this.refreshable = typeof getToken === "function";
    this.getToken = getToken || (async () => token);
    this.options = { reconnect, minDelayMs, maxDelayMs, requestTimeoutMs, healthyAfterMs, maxAttemptsWithoutHello };
    this.WebSocketImpl = WebSocketImpl;
    this.state = "idle";
    this.hello = null;
    this.listeners = new Map();
    this.pending = new Map();
    this.nextSeq = 1;
    this.attempt = 0; // backoff exponent; starts over only after a healthy connection
    this.failedWithoutHello = 0; // consecutive attempts that ended before HELLO
    this.reconnectAfterMs = null;
    this.active = false; // between connect() and close() (or a final close)
    this.generation = 0; // bumped by every attempt and by close(): stale work checks it
    this.socket = null;
    this.openedAt = null; // when the current socket got HELLO
    this.timer = null;
  }

  on(event, fn) {
    if (!this.listeners.has(event)) this.listeners.set(event, new Set());
    this.listeners.get(event).add(fn);
    return () => this.listeners.get(event).delete(fn);
  }

  emit(event, value) {
    for (const fn of this.listeners.get(event) || []) {
      try { fn(value); } catch (e) { console.error("pushgate listener failed", e); }
    }
  }

  setState(state) {
    if (this.state !== state) { this.state = state; this.emit("state", state); }
  }

  /** Opens the connection and keeps it open until close(). Does nothing while already connecting, open or reconnecting. */
  connect() {
    if (this.active) return;
    this.active = true;
    this.attempt = 0;
    this.failedWithoutHello = 0;
    this.setState("connecting");
    this.open();
  }

  /** One connection attempt: fetch a token, open a socket. */
  async open() {
    const generation = ++this.generation;
    this.timer = null;
    this.reconnectAfterMs = null;
    this.openedAt = null;
    let token;
    try {
      token = await this.getToken();
    } catch (e) {
      if (generation !== this.generation) return;
      this.emit("error", e);
      this.retry();
      return;
    }
    // close() (or another attempt) happened while the token was on its way.
    if (generation !== this.generation || !this.active) return;
    const sep = this.url.includes("?") ? "&" : "?";
    let socket;
    try {
      socket = new this.WebSocketImpl(token ? `${this.url}${sep}token=${encodeURIComponent(token)}` : this.url);
    } catch (e) { // a malformed URL: retrying cannot help
      this.emit("error", e);
      this.active = false;
      this.setState("closed");
      return;
    }
    socket.binaryType = "arraybuffer";
    this.socket = socket;
    // Events of a socket that is no longer current (after close(), or a
    // close() + connect()) must not touch the client.
    socket.onmessage = (event) => { if (this.socket === socket) this.onMessage(event.data); };
    socket.onerror = () => { if (this.socket === socket) this.emit("error", new Error("websocket error")); };
    socket.onclose = (event) => { if (this.socket === socket) this.onClose(event.code, event.reason); };
  }

  onMessage(data) {
    if (typeof data === "string") return; // the gateway never sends text
    let frame;
    try { frame = decodeFrame(data); } catch (e) { this.emit("error", e); return; }
    this.emit("frame", frame);
    if (frame.action === Actions.HELLO) {
      this.hello = frame.json;
      this.openedAt = Date.now();
      this.failedWithoutHello = 0;
      this.setState("open");
      this.emit("hello", frame.json);
      return;
    }
    if (frame.action === Actions.RECONNECT && frame.json) {
      const after = frame.json.after_ms;
      this.reconnectAfterMs = typeof after === "number" && after >= 0 ? after : null; // 0 means now
      return;
    }
    // A reply echoes the request's action (PONG answers PING) and seq; an
    // ERROR names the request's action and seq. Pushes are never replies,
    // whatever their payload carries.
    const json = frame.json;
    const seq = json && typeof json.seq === "number" ? json.seq : null;
    const request = seq !== null ? this.pending.get(seq) : undefined;
    if (request && !isPushAction(frame.action)) {
      const isError = frame.action === Actions.ERROR && json.action === request.action;
      if (isError || frame.action === request.replyAction) {
        this.pending.delete(seq);
        clearTimeout(request.timer);
        if (isError) request.reject(Object.assign(new Error(json.message), json));
        else request.resolve(json);
        return;
      }
    }
    if (isPushAction(frame.action)) this.emit("push", frame);
  }

  failPending(error) {
    for (const { reject, timer } of this.pending.values()) {
      clearTimeout(timer);
      reject(error);
    }
    this.pending.clear();
  }

  onClose(code, reason) {
    const healthy = this.openedAt !== null && Date.now() - this.openedAt >= this.options.healthyAfterMs;
    if (this.openedAt === null) this.failedWithoutHello += 1;
    if (healthy) this.attempt = 0;
    this.socket = null;
    this.openedAt = null;
    this.failPending(new Error(`connection closed (${code})`));
    const advice = CloseCodes[code] || { reconnect: true };
    const wanted = this.options.reconnect && this.active && advice.reconnect;
    // Why the client stops although the code says "reconnect": the same
    // static token would be refused, or attempts keep failing before HELLO.
    let stopped = null;
    if (wanted && code === 4003 && !this.refreshable) stopped = "token_expired";
    else if (wanted && this.failedWithoutHello >= this.options.maxAttemptsWithoutHello) stopped = "no_hello";
    const again = wanted && !stopped;
    const delay = again ? this.nextDelay() : null;
    if (!again) { this.active = false; this.reconnectAfterMs = null; }
    this.emit("close", { code, reason, name: advice.name, reconnectInMs: delay, stopped });
    if (again) {
      this.setState("reconnecting");
      this.timer = setTimeout(() => this.open(), delay);
    } else {
      this.setState("closed");
    }
  }

  nextDelay() {
    // A drain tells us when to come back (0 included); otherwise back off with jitter.
    const hinted = this.reconnectAfterMs;
    this.reconnectAfterMs = null;
    const delay = hinted ?? backoffDelay(this.attempt, this.options.minDelayMs, this.options.maxDelayMs);
    this.attempt += 1;
    return delay;
  }

  retry() {
    if (!this.options.reconnect || !this.active) { this.active = false; this.setState("closed"); return; }
    this.setState("reconnecting");
    this.timer = setTimeout(() => this.open(), this.nextDelay());
  }

  /** Sends a frame without waiting for a reply. Returns false when not open. */
  send(action, payload) {
    if (!this.socket || this.socket.readyState !== 1) return false;
    this.socket.send(encodeFrame(action, payload));
    this.emit("sent", { action, name: actionName(action), payload });
    return true;
  }

  /**
   * Sends a JSON request with a fresh `seq`; resolves with the reply (same
   * action, PONG for PING, same seq), rejects with the ERROR for it.
   */
  request(action, payload = {}) {
    const seq = this.nextSeq++;
    const body = { ...payload, seq };
    const replyAction = action === Actions.PING ? Actions.PONG : action;
    return new Promise((resolve, reject) => {
      if (!this.send(action, body)) { reject(new Error("not connected")); return; }
      const timer = setTimeout(() => {
        this.pending.delete(seq);
        reject(new Error(`no reply to seq ${seq} within ${this.options.requestTimeoutMs} ms`));
      }, this.options.requestTimeoutMs);
      this.pending.set(seq, { action, replyAction, resolve, reject, timer });
    });
  }

  /**
   * Closes for good (no reconnect), at once: pending requests reject, a
   * pending token fetch or reconnect is abandoned, and events of the old
   * socket are ignored, so connect() may follow right away.
   */
  close(code = 1000, reason = "bye") {
    const socket = this.socket;
    this.active = false;
    this.generation += 1;
    clearTimeout(this.timer);
    this.timer = null;
    this.socket = null;
    this.openedAt = null;
    this.reconnectAfterMs = null;
    this.failPending(new Error("closed by the client"));
    if (socket) {
      socket.close(code, reason);
      this.emit("close", { code, reason, name: (CloseCodes[code] || {}).name, reconnectInMs: null, stopped: null });
    }
    this.setState("closed");
  }
}
