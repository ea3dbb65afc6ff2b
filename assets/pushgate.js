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
  ADD_FRIEND: 110, FETCH_INFO: 111,
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

/**
 * A connection to pushgate with request/reply matching by `seq` and
 * automatic reconnect with jittered exponential backoff.
 *
 *   const client = new PushgateClient({ url: "wss://gw.example/ws", token });
 *   client.on("push", (frame) => console.log(frame.json));
 *   client.connect();
 *   const info = await client.request(Actions.FETCH_INFO, { user: "bob" });
 *
 * Events: "state" (idle|connecting|open|reconnecting|closed), "hello",
 * "frame" (every incoming frame), "push" (actions 200-299 and >= 1000),
 * "sent", "close" ({ code, reason, reconnectInMs }), "error".
 */
export class PushgateClient {
  constructor({
    url, token, getToken,
    reconnect = true, minDelayMs = 500, maxDelayMs = 30000, requestTimeoutMs = 10000,
    WebSocketImpl = globalThis.WebSocket,
  }) {
    if (!url) throw new Error("url is required");
    this.url = url;
    this.getToken = getToken || (async () => token);
    this.options = { reconnect, minDelayMs, maxDelayMs, requestTimeoutMs };
    this.WebSocketImpl = WebSocketImpl;
    this.state = "idle";
    this.hello = null;
    this.listeners = new Map();
    this.pending = new Map();
    this.nextSeq = 1;
    this.attempt = 0;
    this.reconnectAfterMs = null;
    this.userClosed = false;
    this.socket = null;
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

  /** Opens the connection (and keeps it open until close()). */
  async connect() {
    this.userClosed = false;
    clearTimeout(this.timer);
    this.setState(this.attempt === 0 ? "connecting" : "reconnecting");
    let token;
    try { token = await this.getToken(); } catch (e) { this.emit("error", e); this.scheduleReconnect(); return; }
    const sep = this.url.includes("?") ? "&" : "?";
    const socket = new this.WebSocketImpl(token ? `${this.url}${sep}token=${encodeURIComponent(token)}` : this.url);
    socket.binaryType = "arraybuffer";
    this.socket = socket;
    socket.onmessage = (event) => this.onMessage(event.data);
    socket.onerror = () => this.emit("error", new Error("websocket error"));
    socket.onclose = (event) => this.onClose(event.code, event.reason);
  }

  onMessage(data) {
    if (typeof data === "string") return; // the gateway never sends text
    let frame;
    try { frame = decodeFrame(data); } catch (e) { this.emit("error", e); return; }
    this.emit("frame", frame);
    if (frame.action === Actions.HELLO) {
      this.hello = frame.json;
      this.attempt = 0;
      this.setState("open");
      this.emit("hello", frame.json);
      return;
    }
    if (frame.action === Actions.RECONNECT && frame.json) {
      this.reconnectAfterMs = Number(frame.json.after_ms) || null;
      return;
    }
    const seq = frame.json && typeof frame.json.seq === "number" ? frame.json.seq : null;
    if (seq !== null && this.pending.has(seq)) {
      const { resolve, reject, timer } = this.pending.get(seq);
      this.pending.delete(seq);
      clearTimeout(timer);
      if (frame.action === Actions.ERROR) reject(Object.assign(new Error(frame.json.message), frame.json));
      else resolve(frame.json);
      return;
    }
    if ((frame.action >= 200 && frame.action <= 299) || frame.action >= 1000) this.emit("push", frame);
  }

  onClose(code, reason) {
    this.socket = null;
    for (const { reject, timer } of this.pending.values()) {
      clearTimeout(timer);
      reject(new Error(`connection closed (${code})`));
    }
    this.pending.clear();
    const advice = CloseCodes[code] || { reconnect: true };
    const again = this.options.reconnect && !this.userClosed && advice.reconnect;
    const delay = again ? this.nextDelay() : null;
    this.emit("close", { code, reason, name: advice.name, reconnectInMs: delay });
    if (again) {
      this.setState("reconnecting");
      this.timer = setTimeout(() => this.connect(), delay);
    } else {
      this.setState("closed");
    }
  }

  nextDelay() {
    // A drain tells us when to come back; otherwise back off with jitter.
    const hinted = this.reconnectAfterMs;
    this.reconnectAfterMs = null;
    const delay = hinted ?? backoffDelay(this.attempt, this.options.minDelayMs, this.options.maxDelayMs);
    this.attempt += 1;
    return delay;
  }

  scheduleReconnect() {
    if (!this.options.reconnect || this.userClosed) { this.setState("closed"); return; }
    this.setState("reconnecting");
    this.timer = setTimeout(() => this.connect(), this.nextDelay());
  }

  /** Sends a frame without waiting for a reply. Returns false when not open. */
  send(action, payload) {
    if (!this.socket || this.socket.readyState !== 1) return false;
    this.socket.send(encodeFrame(action, payload));
    this.emit("sent", { action, name: actionName(action), payload });
    return true;
  }

  /** Sends a JSON request with a fresh `seq`; resolves with the reply payload, rejects with the ERROR. */
  request(action, payload = {}) {
    const seq = this.nextSeq++;
    const body = { ...payload, seq };
    return new Promise((resolve, reject) => {
      if (!this.send(action, body)) { reject(new Error("not connected")); return; }
      const timer = setTimeout(() => {
        this.pending.delete(seq);
        reject(new Error(`no reply to seq ${seq} within ${this.options.requestTimeoutMs} ms`));
      }, this.options.requestTimeoutMs);
      this.pending.set(seq, { resolve, reject, timer });
    });
  }

  /** Closes for good (no reconnect). */
  close(code = 1000, reason = "bye") {
    this.userClosed = true;
    clearTimeout(this.timer);
    if (this.socket) this.socket.close(code, reason);
    else this.setState("closed");
  }
}
