// Shared pieces of the browser tests: Debian's headless Chromium through
// playwright-core, a page on the real gateway that imports the /pushgate.js
// the gateway serves, polling helpers, and a scripted WebSocket server (the
// `ws` package) for the misbehaving-server cases. Nothing here skips: a
// missing browser or package throws.
import { chromium } from "playwright-core";
import { WebSocketServer } from "ws";

export const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set (run this through cargo test --test browser)`);
  return value;
};

export function fail(message) {
  throw new Error(message);
}

export async function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `probe` (async) until it returns a truthy value; fails with `what` after `timeoutMs`. */
export async function waitFor(what, probe, timeoutMs = 10000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) fail(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(50);
  }
}

/**
 * Opens the gateway's console page and installs `window.pg`: the module the
 * gateway serves plus `pg.make(name, options)`, which builds a client whose
 * events are recorded in `pg.clients[name].events` ([event, value] pairs).
 */
export async function openClientPage(browser, pageUrl) {
  const page = await browser.newPage();
  const pageErrors = [];
  page.on("pageerror", (e) => pageErrors.push(e.message));
  await page.goto(pageUrl);
  await page.evaluate(async () => {
    const mod = await import("/pushgate.js");
    const clients = {};
    window.pg = {
      mod, clients,
      make(name, options) {
        const client = new mod.PushgateClient(options);
        const events = [];
        const hex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
        const events_ = ["state", "hello", "push", "close", "error", "message", "synced", "gap", "ack", "acked",
          "duplicate", "lastid", "tokenexpiring", "tokenrefreshed", "tokenrefreshfailed", "revoked"];
        for (const event of events_) {
          client.on(event, (value) => {
            let v = value;
            if (event === "push") v = { action: value.action, json: value.json, id: value.id };
            if (event === "message" || event === "duplicate") {
              v = { id: value.id, action: value.action, json: value.json, hex: hex(value.bytes), replayed: value.replayed };
            }
            if (event === "error") v = String(value && value.message);
            events.push([event, v]);
          });
        }
        clients[name] = { client, events };
        return client;
      },
      count(name, event) { return clients[name].events.filter(([e]) => e === event).length; },
      last(name, event) { return clients[name].events.filter(([e]) => e === event).map(([, v]) => v).pop(); },
    };
  });
  return { page, pageErrors };
}

/** Counts of an event of a client made with pg.make. */
export const count = (page, name, event) => page.evaluate(([n, e]) => window.pg.count(n, e), [name, event]);
export const last = (page, name, event) => page.evaluate(([n, e]) => window.pg.last(n, e), [name, event]);
export const state = (page, name) => page.evaluate((n) => window.pg.clients[n].client.state, name);

/** Frames: 4-byte big-endian action + JSON (or nothing). */
export function frame(action, json) {
  const body = json === undefined ? Buffer.alloc(0) : Buffer.from(JSON.stringify(json));
  const header = Buffer.alloc(4);
  header.writeUInt32BE(action >>> 0, 0);
  return Buffer.concat([header, body]);
}

/** A raw frame: action + the payload text as given (for JSON with u64 ids beyond 2^53). */
export function frameText(action, text) {
  const header = Buffer.alloc(4);
  header.writeUInt32BE(action >>> 0, 0);
  return Buffer.concat([header, Buffer.from(text)]);
}

/**
 * A MESSAGE (6) frame: [6][u64 id][u32 inner action][inner payload];
 * `body` is a Buffer (opaque) or a value sent as JSON.
 */
export function message(id, innerAction, body) {
  const inner = Buffer.isBuffer(body) ? body : Buffer.from(JSON.stringify(body));
  const header = Buffer.alloc(16);
  header.writeUInt32BE(6, 0);
  header.writeBigUInt64BE(BigInt(id), 4);
  header.writeUInt32BE(innerAction >>> 0, 12);
  return Buffer.concat([header, inner]);
}

/**
 * An ACK (7) frame the client sent, read without losing digits: every
 * number becomes a string first. { ids: [string], upto: string|null,
 * seq: number|null, text }.
 */
export function parseAck(data) {
  const bytes = Buffer.from(data);
  const action = bytes.readUInt32BE(0);
  if (action !== 7) return null;
  const text = bytes.subarray(4).toString();
  const json = JSON.parse(text.replace(/([:[,])\s*(-?[0-9]+)/g, '$1"$2"'));
  return {
    ids: (json.ids || []).map(String),
    upto: json.upto === undefined ? null : String(json.upto),
    seq: json.seq === undefined ? null : Number(json.seq),
    text,
  };
}

export function parse(data) {
  const bytes = Buffer.from(data);
  const action = bytes.readUInt32BE(0);
  const rest = bytes.subarray(4);
  return { action, json: rest.length ? JSON.parse(rest.toString()) : {} };
}

export const hello = (user = "scripted") => frame(1, {
  session_id: String(Math.floor(Math.random() * 1e9)), user, device: null,
  heartbeat_secs: 25, idle_timeout_secs: 60, max_message_bytes: 65536, server_time_ms: Date.now(),
});

/**
 * A scripted gateway on an ephemeral loopback port. `onConnection(ws, path,
 * request)` scripts each connection; `server.connections` logs
 * { path, at, token, params (URLSearchParams) } for every accepted upgrade.
 */
export async function scriptedServer(onConnection) {
  const wss = new WebSocketServer({ host: "127.0.0.1", port: 0 });
  await new Promise((resolve, reject) => { wss.once("listening", resolve); wss.once("error", reject); });
  const connections = [];
  wss.on("connection", (ws, request) => {
    const url = new URL(request.url, "http://x");
    connections.push({ path: url.pathname, at: Date.now(), token: url.searchParams.get("token"), params: url.searchParams });
    onConnection(ws, url.pathname, request);
  });
  const { port } = wss.address();
  return {
    url: (path = "/ws") => `ws://127.0.0.1:${port}${path}`,
    connections,
    close: () => new Promise((resolve) => {
      for (const ws of wss.clients) ws.terminate();
      wss.close(() => resolve());
    }),
  };
}

/**
 * An HS256 JWT for `user` signed with `secret`, expiring `ttlSecs` from now
 * (negative: already expired), with `extra` claims (e.g. a `jti`).
 */
export async function mint(secret, user, ttlSecs, extra = {}) {
  const { createHmac } = await import("node:crypto");
  const b64 = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const now = Math.floor(Date.now() / 1000);
  const body = `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ sub: user, iat: now, exp: now + ttlSecs, ...extra })}`;
  return `${body}.${createHmac("sha256", secret).update(body).digest("base64url")}`;
}

/** Internal API helpers against the real gateway. */
export function api(base, key) {
  const call = async (method, path, body) => {
    const response = await fetch(`${base}${path}`, {
      method,
      headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    return response.json();
  };
  return {
    push: (users, payload) => call("POST", "/v1/push", { users, payload }),
    sessions: async (user) => (await call("GET", `/v1/users/${user}/sessions`)).sessions.length,
  };
}
