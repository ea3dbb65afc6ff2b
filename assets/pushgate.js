// pushgate.js: a small, dependency-free client for the pushgate WebSocket
// gateway. Works in browsers (as an ES module: import { PushgateClient }
// from "/pushgate.js") and in React Native (copy the file; it only needs
// WebSocket, TextEncoder/TextDecoder and setTimeout). No build step.
//
// Wire format (proto-spec/README.md): every message is one binary frame,
// a 4-byte big-endian action code followed by the payload. Built-in actions
// carry a JSON object; actions >= 1000 carry opaque bytes.
//
// Durable delivery (proto-spec section 8): the client always resumes
// (`resume=1`, or `since=ID` when given), hands every MESSAGE (6) to the
// application like a plain push of its inner action, with its id, and acks
// it once the application's handlers returned (or their promises resolved).
// Message ids are u64 and may exceed 2^53: this file exposes every id as a
// decimal STRING ("17", "18446744073709551615") and compares them as BigInt.
//
// Tokens during a session (proto-spec section 9): on TOKEN_EXPIRING (10)
// the client asks `getToken` for a fresh token and sends TOKEN_REFRESH (9);
// after a 4006 REVOKED close it reconnects only with a token different from
// the revoked one.

export const Actions = Object.freeze({
  HELLO: 1, PING: 2, PONG: 3, ERROR: 4, RECONNECT: 5, MESSAGE: 6, ACK: 7, SYNCED: 8,
  TOKEN_REFRESH: 9, TOKEN_EXPIRING: 10,
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
  // Not with the same token: the client asks getToken once for a new one (see onRevoked).
  4006: { name: "REVOKED", reconnect: false },
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

/** The JSON (or undefined) of a payload of `action`: built-in actions (< 1000) carry JSON, `{}` when empty. */
function payloadJson(action, payload) {
  if (action >= 1000) return undefined;
  if (payload.length === 0) return {};
  try { return JSON.parse(decoder.decode(payload)); } catch (_) { return undefined; }
}

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);
const MAX_U64 = (1n << 64n) - 1n;

/**
 * JSON.parse, except that integer literals above 2^53 - 1 become decimal
 * strings instead of losing digits. Used for the frames that carry message
 * ids (ACK, SYNCED).
 */
export function parseJsonKeepingIds(text) {
  let out = "";
  let copied = 0;
  let i = 0;
  while (i < text.length) {
    const c = text[i];
    if (c === '"') { // skip a string, escapes included
      i += 1;
      while (i < text.length && text[i] !== '"') i += text[i] === "\\" ? 2 : 1;
      i += 1;
    } else if (c === "-" || (c >= "0" && c <= "9")) {
      let j = i + 1;
      while (j < text.length && /[0-9.eE+-]/.test(text[j])) j += 1;
      const token = text.slice(i, j);
      if (/^[0-9]{16,}$/.test(token) && BigInt(token) > MAX_SAFE) {
        out += `${text.slice(copied, i)}"${token}"`;
        copied = j;
      }
      i = j;
    } else {
      i += 1;
    }
  }
  return JSON.parse(out + text.slice(copied));
}

/**
 * A message id as this file exposes it: a decimal string. Accepts a string
 * of digits, a BigInt or a safe non-negative integer; null for anything
 * else (or a value outside u64).
 */
export function idString(value) {
  let big;
  if (typeof value === "bigint") big = value;
  else if (typeof value === "number" && Number.isSafeInteger(value)) big = BigInt(value);
  else if (typeof value === "string" && /^[0-9]{1,20}$/.test(value)) big = BigInt(value);
  else return null;
  return big >= 0n && big <= MAX_U64 ? big.toString() : null;
}

/** Compares two ids (decimal strings): negative, 0 or positive. */
export function compareIds(a, b) {
  const x = BigInt(a);
  const y = BigInt(b);
  return x < y ? -1 : x > y ? 1 : 0;
}

/**
 * Decodes a MESSAGE (6) payload `[u64 id][u32 inner action][inner payload]`
 * into { id (decimal string), action, name, bytes, json } (the inner frame,
 * shaped like a decoded push). Null when it is shorter than 12 bytes.
 */
export function decodeMessage(payload) {
  if (payload.length < 12) return null;
  const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  const id = view.getBigUint64(0, false).toString();
  const action = view.getUint32(8, false);
  const bytes = payload.subarray(12);
  return { id, action, name: actionName(action), bytes, json: payloadJson(action, bytes) };
}

/**
 * Decodes a frame: { action, name, bytes, json }. `json` is the parsed
 * payload for built-in actions (undefined for opaque or invalid payloads;
 * ids in ACK and SYNCED above 2^53 come as strings). A MESSAGE (6) also
 * has `message`, its decoded inner frame (see decodeMessage), or null.
 * Throws on a message shorter than the 4-byte header.
 */
export function decodeFrame(data) {
  const bytes = data instanceof Uint8Array ? data : new Uint8Array(data);
  if (bytes.length < 4) throw new Error(`frame of ${bytes.length} bytes has no action header`);
  const action = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(0, false);
  const payload = bytes.subarray(4);
  if (action === Actions.MESSAGE) {
    return { action, name: actionName(action), bytes: payload, json: undefined, message: decodeMessage(payload) };
  }
  let json;
  if ((action === Actions.ACK || action === Actions.SYNCED) && payload.length > 0) {
    try { json = parseJsonKeepingIds(decoder.decode(payload)); } catch (_) { json = undefined; }
  } else {
    json = payloadJson(action, payload);
  }
  return { action, name: actionName(action), bytes: payload, json };
}

/** Full-jitter exponential backoff: random in [0, min(max, base * 2^attempt)]. */
export function backoffDelay(attempt, baseMs, maxMs) {
  const cap = Math.min(maxMs, baseMs * 2 ** Math.min(attempt, 20));
  return Math.floor(Math.random() * cap);
}

const isPushAction = (action) => (action >= 200 && action <= 299) || action >= 1000;

/** The most ids one ACK frame may carry (proto-spec section 8). */
export const MAX_ACK_IDS = 1024;

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
 * "frame" (every incoming frame), "push" (actions 200-299 and >= 1000, and
 * durable messages, see below), "sent", "close" ({ code, reason, name,
 * reconnectInMs, stopped }), "error"; tokens: "tokenexpiring",
 * "tokenrefreshed", "tokenrefreshfailed", "revoked" (see below).
 *
 * Options: `token` (static) or `getToken` (called before every connection
 * attempt, reconnects included); `reconnect`; `minDelayMs`/`maxDelayMs`
 * (backoff); `healthyAfterMs` (a connection must stay up this long after
 * HELLO before the backoff starts over); `maxAttemptsWithoutHello` (stop
 * after this many consecutive attempts that ended before HELLO; default
 * never); `requestTimeoutMs`; `WebSocketImpl`.
 *
 * Durable delivery (MESSAGE 6, ACK 7, SYNCED 8):
 *
 *   const client = new PushgateClient({ url, getToken, onMessage: async (m) => save(m.id, m.json) });
 *   client.on("synced", ({ last_id, replayed, gap }) => ...);
 *   client.on("gap", () => resyncFromBackend());
 *
 * - Every connection asks for the replay: `resume=1` on the URL, or
 *   `since=ID` while the `since` option is set (until the first SYNCED:
 *   the server has then recorded it). `resume: false` asks for neither
 *   (live MESSAGE frames only, no replay, no SYNCED).
 * - A MESSAGE is handed to `onMessage` (option), the "message" listeners
 *   and the "push" listeners as a frame like a plain push of its inner
 *   action, plus `id` (decimal string: ids are u64 and can exceed 2^53),
 *   `replayed` (true when it came in the replay before SYNCED) and
 *   `durable: true`. Messages are handled one at a time in arrival order:
 *   the next one waits for the promises the handlers of this one returned.
 * - `autoAck` (default true): the id is acked once every handler returned
 *   and every promise they returned resolved. A handler that throws or
 *   rejects leaves it unacked (and forgotten: its replay on the next
 *   connection is delivered again). `autoAck: false`: nothing is acked
 *   until the application calls `ack(id)` / `ackUpTo(id)`.
 * - Acks are batched: one ACK `{"ids": [...]}` frame (plus `"upto"` when
 *   ackUpTo was used) per `ackBatchMs` (default 50 ms), or at once when
 *   `ackBatchMax` ids (default 64, never above 1024) are waiting. "ack"
 *   fires for every ACK sent, `{ ids, upto, seq }`. With `confirmAcks`
 *   (default false) each ACK carries a `seq`: the gateway answers it, the
 *   reply `{"upto", "pending"}` fires "acked" `{ ids, upto, seq, position,
 *   pending }`, and an ERROR `internal` queues the ids again. Without it
 *   no answer comes back (one downlink frame less per ACK); an ack the
 *   gateway could not store is made good by the replay of the next
 *   connection (acked again, not handed to the application twice).
 *   Acks not sent while disconnected go out after the next HELLO.
 * - Delivery is at least once: the client remembers the ids it handled
 *   during this page's life (the last `rememberIds`, default 1024) and
 *   does not hand such an id to the application again when a reconnect
 *   replays it (its ack was lost); it acks it again instead. An id it
 *   forgot, or a page reload, is handled again.
 * - SYNCED fires "synced" `{ last_id, replayed, gap, first_id }` (ids as
 *   strings, first_id null without a gap) after the replayed messages were
 *   handled and before any live one; with `gap: true` also "gap" (messages
 *   this device never acked were evicted or expired: resync from your
 *   backend).
 * - `lastId` is the highest id handled (or reported by SYNCED), a string or
 *   null; "lastid" fires when it grows: persist it if you want to pass it
 *   as `since` later (`since` acks everything up to it for this device, so
 *   give only an id you processed everything up to).
 *
 * Tokens during a session (TOKEN_REFRESH 9, TOKEN_EXPIRING 10, close 4006):
 *
 * - TOKEN_EXPIRING fires "tokenexpiring" `{ expires_at, expires_in_secs }`
 *   and, with `autoRefresh` (default true), refreshes: `getToken` (the hook
 *   used for reconnects) is awaited and its token sent as TOKEN_REFRESH
 *   `{"token", "seq"}`. The reply fires "tokenrefreshed" `{ expires_at }`
 *   (unix seconds; `tokenExpiresAt` keeps it) and the new token is the
 *   session's. A refusal fires "tokenrefreshfailed" `{ code, message,
 *   expires_at }` with the ERROR's code (`token_expired`,
 *   `token_wrong_user`, `token_revoked`, ...); the session keeps its old
 *   expiry and ends with 4003 unless a later refresh succeeds. Without an
 *   ERROR the code says what went wrong on this side: `static_token` (only
 *   a `token` option, nothing to refresh with: the session will end with
 *   4003), `get_token_failed` (getToken threw or returned nothing; "error"
 *   fires too), `not_connected` (the connection closed or changed
 *   meanwhile), `no_reply` (timed out).
 * - `refreshToken(token?)` refreshes by hand: with a token it sends that one
 *   (and, for a client built with a static `token`, reconnects use it from
 *   then on), without one it asks getToken. Resolves `{ expires_at }`,
 *   rejects like the events above. Concurrent calls share one request.
 * - 4006 REVOKED: the revoked token is never used again. A client with
 *   getToken calls it once: a token different from every token of the
 *   revoked connection reconnects (with backoff) with that token; the same
 *   token, none, or a failing getToken stops the client and fires
 *   "revoked" `{ code, reason }` (reason `same_token`, `no_token`,
 *   `get_token_failed`). A static `token`, or `reconnect: false`, stops at
 *   once ("revoked" with reason `static_token` / `no_reconnect`; close
 *   event `stopped: "revoked"`). Revocation refuses tokens issued before
 *   it, so getToken must mint a new one, not return a cached one; tokens
 *   minted in the same second with the same claims are byte for byte the
 *   same, so give each token a `jti` (or anything that differs).
 */
export class PushgateClient {
  constructor({
    url, token, getToken,
    reconnect = true, minDelayMs = 500, maxDelayMs = 30000, requestTimeoutMs = 10000,
    healthyAfterMs = 10000, maxAttemptsWithoutHello = Infinity,
    WebSocketImpl = globalThis.WebSocket,
    resume = true, since = null, onMessage = null, autoAck = true, ackBatchMs = 50, ackBatchMax = 64,
    confirmAcks = false, rememberIds = 1024, autoRefresh = true,
  }) {
    if (!url) throw new Error("url is required");
    this.url = url;
    // With a static token there is nothing to refresh after TOKEN_EXPIRED.
    this.refreshable = typeof getToken === "function";
    this.staticToken = token;
    this.getToken = getToken || (async () => this.staticToken);
    this.autoRefresh = autoRefresh;
    this.sessionTokens = new Set(); // the current connection's token and the ones it refreshed to
    this.tokenExpiresAt = null; // from TOKEN_EXPIRING and TOKEN_REFRESH replies (unix seconds)
    this.refreshing = null; // the refresh in flight
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
    // Durable delivery.
    const givenSince = since !== null && since !== undefined;
    if (givenSince && idString(since) === null) throw new Error(`since: ${since} is not a message id`);
    this.resume = resume;
    this.since = givenSince ? idString(since) : null;
    this.onMessageHandler = typeof onMessage === "function" ? onMessage : null;
    this.autoAck = autoAck;
    this.ackBatchMs = Math.max(0, ackBatchMs);
    this.ackBatchMax = Math.min(MAX_ACK_IDS, Math.max(1, Math.floor(ackBatchMax) || 1));
    this.confirmAcks = confirmAcks;
    this.rememberIds = Math.max(1, rememberIds);
    this.replaying = false; // the current connection asked for the replay and its SYNCED has not arrived yet
    this.synced = null; // the last SYNCED, normalized
    this.lastId = null;
    this.handled = new Map(); // id -> "handled" | "acked", the last rememberIds ids, oldest first
    this.ackIds = new Set(); // ids waiting to be acked
    this.ackUpto = null; // an ackUpTo waiting to be sent
    this.ackTimer = null;
    this.deliveries = Promise.resolve(); // messages and SYNCED, handled one after the other
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

  /** One connection attempt: fetch a token (unless `given`), open a socket. */
  async open(given) {
    const generation = ++this.generation;
    this.timer = null;
    this.reconnectAfterMs = null;
    this.openedAt = null;
    let token = given;
    if (token === undefined) {
      try {
        token = await this.getToken();
      } catch (e) {
        if (generation !== this.generation) return;
        this.emit("error", e);
        this.retry();
        return;
      }
    }
    // close() (or another attempt) happened while the token was on its way.
    if (generation !== this.generation || !this.active) return;
    const params = [];
    if (this.since !== null) params.push(`since=${this.since}`);
    else if (this.resume) params.push("resume=1");
    if (token) params.push(`token=${encodeURIComponent(token)}`);
    const sep = this.url.includes("?") ? "&" : "?";
    const url = params.length ? `${this.url}${sep}${params.join("&")}` : this.url;
    this.replaying = this.since !== null || this.resume; // until SYNCED
    let socket;
    try {
      socket = new this.WebSocketImpl(url);
    } catch (e) { // a malformed URL: retrying cannot help
      this.emit("error", e);
      this.active = false;
      this.setState("closed");
      return;
    }
    socket.binaryType = "arraybuffer";
    this.socket = socket;
    this.sessionTokens = new Set(token ? [token] : []);
    this.tokenExpiresAt = null;
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
      this.flushAcks(); // acks left over from an earlier connection
      return;
    }
    if (frame.action === Actions.MESSAGE) {
      this.onDurable(frame);
      return;
    }
    if (frame.action === Actions.SYNCED) {
      this.onSynced(frame.json);
      return;
    }
    if (frame.action === Actions.TOKEN_EXPIRING) {
      this.onTokenExpiring(frame.json || {});
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
    if (code === 4006) { this.onRevoked(code, reason, advice); return; }
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

  /**
   * 4006 REVOKED: never reconnect with a token of the revoked connection.
   * With getToken, ask it once; a different token reconnects (with
   * backoff), anything else stops with "revoked".
   */
  onRevoked(code, reason, advice) {
    const revoked = this.sessionTokens;
    const stop = (why) => {
      this.active = false;
      this.reconnectAfterMs = null;
      this.setState("closed");
      this.emit("revoked", { code, reason: why });
    };
    const canAsk = this.options.reconnect && this.active && this.refreshable;
    const stopped = canAsk ? null : "revoked";
    this.emit("close", { code, reason, name: advice.name, reconnectInMs: null, stopped });
    if (!canAsk) {
      stop(this.refreshable ? "no_reconnect" : "static_token");
      return;
    }
    this.setState("reconnecting");
    const generation = ++this.generation;
    Promise.resolve().then(() => this.getToken()).then(
      (token) => {
        if (generation !== this.generation || !this.active) return;
        if (!token) { stop("no_token"); return; }
        if (revoked.has(token)) { stop("same_token"); return; }
        this.timer = setTimeout(() => this.open(token), this.nextDelay());
      },
      (e) => {
        if (generation !== this.generation || !this.active) return;
        this.emit("error", e);
        stop("get_token_failed");
      },
    );
  }

  // ---- tokens during a session ----

  onTokenExpiring(json) {
    const info = { expires_at: json.expires_at ?? null, expires_in_secs: json.expires_in_secs ?? null };
    if (typeof info.expires_at === "number") this.tokenExpiresAt = info.expires_at;
    this.emit("tokenexpiring", info);
    if (!this.autoRefresh) return;
    // Failures are reported through "tokenrefreshfailed" (and "error").
    this.refreshToken().catch(() => {});
  }

  /**
   * Sends TOKEN_REFRESH with `token`, or with a token from getToken when
   * none is given. Resolves `{ expires_at }`; rejects with the ERROR (its
   * `code`) or an Error whose `code` says why (see the class comment).
   */
  refreshToken(token) {
    if (this.refreshing) return this.refreshing;
    this.refreshing = this.doRefresh(token).finally(() => { this.refreshing = null; });
    return this.refreshing;
  }

  async doRefresh(given) {
    const failed = (code, message, cause) => {
      const error = Object.assign(new Error(message), { code });
      if (cause && cause.code) Object.assign(error, cause);
      this.emit("tokenrefreshfailed", { code: error.code, message: error.message, expires_at: this.tokenExpiresAt });
      return error;
    };
    const socket = this.socket;
    if (!socket || this.openedAt === null) throw failed("not_connected", "not connected: nothing to refresh");
    let token = given;
    if (token === undefined || token === null || token === "") {
      if (!this.refreshable) {
        throw failed("static_token", "the client has a static token and no getToken: it cannot refresh; " +
          "the gateway closes the session (4003) when the token expires");
      }
      try {
        token = await this.getToken();
      } catch (e) {
        this.emit("error", e);
        throw failed("get_token_failed", `getToken failed: ${e && e.message}`);
      }
      if (!token) {
        const e = new Error("getToken returned no token: the session cannot be refreshed");
        this.emit("error", e);
        throw failed("get_token_failed", e.message);
      }
    }
    if (this.socket !== socket || this.openedAt === null) {
      throw failed("not_connected", "the connection closed or changed while the token was on its way");
    }
    let reply;
    try {
      reply = await this.request(Actions.TOKEN_REFRESH, { token });
    } catch (e) {
      if (e.code) throw failed(e.code, e.message, e); // the gateway's ERROR
      throw failed(this.socket === socket ? "no_reply" : "not_connected", e.message);
    }
    if (this.socket === socket) this.sessionTokens.add(token);
    if (!this.refreshable) this.staticToken = token;
    if (typeof reply.expires_at === "number") this.tokenExpiresAt = reply.expires_at;
    const result = { expires_at: reply.expires_at ?? null };
    this.emit("tokenrefreshed", result);
    return result;
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
    return this.sendWithSeq(action, seq, { ...payload, seq });
  }

  /** Sends `body` (which carries `seq`) and waits for the reply to it. */
  sendWithSeq(action, seq, body) {
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

  // ---- durable delivery ----

  /** A MESSAGE arrived: queue it behind the messages before it. */
  onDurable(frame) {
    const inner = frame.message;
    if (!inner) { this.emit("error", new Error(`MESSAGE of ${frame.bytes.length} bytes is too short`)); return; }
    const message = { ...inner, replayed: this.replaying, durable: true };
    this.deliveries = this.deliveries.then(() => this.deliver(message));
  }

  async deliver(message) {
    const { id } = message;
    const seen = this.handled.get(id);
    if (seen !== undefined) {
      // Handled already during this page's life (a replay after a lost ack):
      // not handed over again; acked again when it had been acked.
      this.emit("duplicate", message);
      if (seen === "acked") this.queueAck(id);
      return;
    }
    this.remember(id, "handling");
    try {
      await this.runHandlers(message);
    } catch (e) {
      this.handled.delete(id); // unacked: its next replay is delivered again
      this.emit("error", e);
      return;
    }
    this.noteLastId(id);
    if (this.autoAck) {
      this.remember(id, "acked");
      this.queueAck(id);
    } else if (this.handled.get(id) === "handling") {
      this.remember(id, "handled"); // an ack() from the handler itself already marked it acked
    }
  }

  /** Calls onMessage and the "message" and "push" listeners; resolves once all of them are done. */
  runHandlers(message) {
    const handlers = [];
    if (this.onMessageHandler) handlers.push(this.onMessageHandler);
    for (const event of ["message", "push"]) handlers.push(...(this.listeners.get(event) || []));
    const results = [];
    for (const fn of handlers) {
      try { results.push(fn(message)); } catch (e) { results.push(Promise.reject(e)); }
    }
    return Promise.all(results);
  }

  remember(id, status) {
    this.handled.delete(id);
    this.handled.set(id, status);
    while (this.handled.size > this.rememberIds) this.handled.delete(this.handled.keys().next().value);
  }

  noteLastId(id) {
    if (id === null || (this.lastId !== null && compareIds(id, this.lastId) <= 0)) return;
    this.lastId = id;
    this.emit("lastid", id);
  }

  onSynced(json) {
    if (!json) { this.emit("error", new Error("SYNCED payload is not JSON")); return; }
    // Every MESSAGE after this one is live; the position `since` named is recorded.
    this.replaying = false;
    this.since = null;
    const synced = {
      last_id: idString(json.last_id),
      replayed: typeof json.replayed === "number" ? json.replayed : 0,
      gap: json.gap === true,
      first_id: idString(json.first_id),
    };
    this.deliveries = this.deliveries.then(() => {
      // The gateway's position is behind ours: it forgot this user's inbox
      // (idle past its expiry) and ids start over. Report a gap and forget
      // the old ids, so new messages with small ids are not taken for
      // replays.
      if (synced.last_id !== null && this.lastId !== null && compareIds(synced.last_id, this.lastId) < 0) {
        synced.gap = true;
        synced.reset = true;
        this.handled.clear();
        this.lastId = synced.last_id;
        this.emit("lastid", synced.last_id);
      }
      this.synced = synced;
      this.noteLastId(synced.last_id);
      this.emit("synced", synced);
      if (synced.gap) this.emit("gap", synced);
    });
  }

  /** Acks message ids (strings, BigInts or safe integers), batched like automatic acks. */
  ack(...ids) {
    const valid = ids.flat().map((id) => {
      const s = idString(id);
      if (s === null) throw new Error(`ack: ${id} is not a message id`);
      return s;
    });
    for (const id of valid) {
      if (this.handled.has(id)) this.remember(id, "acked");
      this.queueAck(id);
    }
  }

  /** Acks every message up to and including `id` (`{"upto": id}`), batched. */
  ackUpTo(id) {
    const s = idString(id);
    if (s === null) throw new Error(`ackUpTo: ${id} is not a message id`);
    for (const [known, status] of this.handled) if (status !== "acked" && compareIds(known, s) <= 0) this.remember(known, "acked");
    if (this.ackUpto === null || compareIds(s, this.ackUpto) > 0) this.ackUpto = s;
    this.scheduleAcks();
  }

  queueAck(id) {
    this.ackIds.add(id);
    if (this.ackIds.size >= this.ackBatchMax) this.flushAcks();
    else this.scheduleAcks();
  }

  scheduleAcks() {
    if (this.ackTimer === null) this.ackTimer = setTimeout(() => this.flushAcks(), this.ackBatchMs);
  }

  /**
   * Sends the waiting acks now (frames of at most ackBatchMax ids). Returns
   * false when not connected: they wait for the next HELLO.
   */
  flushAcks() {
    clearTimeout(this.ackTimer);
    this.ackTimer = null;
    if (this.ackIds.size === 0 && this.ackUpto === null) return true;
    if (!this.socket || this.socket.readyState !== 1 || this.openedAt === null) return false;
    const all = [...this.ackIds].sort(compareIds);
    this.ackIds.clear();
    let upto = this.ackUpto;
    this.ackUpto = null;
    for (let start = 0; start < all.length || upto !== null; start += this.ackBatchMax) {
      this.sendAck(all.slice(start, start + this.ackBatchMax), upto);
      upto = null;
    }
    return true;
  }

  /** One ACK frame. Ids are written as JSON numbers digit for digit (no precision lost). */
  sendAck(ids, upto) {
    const fields = [];
    if (upto !== null) fields.push(`"upto":${upto}`);
    if (ids.length) fields.push(`"ids":[${ids.join(",")}]`);
    const seq = this.confirmAcks ? this.nextSeq++ : null;
    if (seq !== null) fields.push(`"seq":${seq}`);
    const body = `{${fields.join(",")}}`;
    this.emit("ack", { ids, upto, seq });
    if (seq === null) { this.send(Actions.ACK, body); return; }
    this.sendWithSeq(Actions.ACK, seq, body).then(
      (reply) => this.emit("acked", { ids, upto, seq, position: idString(reply.upto), pending: reply.pending }),
      (e) => {
        if (e.code === "internal") { // the inbox could not be written: ack again later
          for (const id of ids) this.ackIds.add(id);
          if (upto !== null && (this.ackUpto === null || compareIds(upto, this.ackUpto) > 0)) this.ackUpto = upto;
          this.scheduleAcks();
        }
        // A closed connection needs nothing: the replay after reconnecting
        // brings the unacked ids back, and they are acked again then.
        if (e.code) this.emit("error", e);
      },
    );
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
