// pushgate.js and tokens during a session (proto-spec section 9), in a real
// headless Chromium, one case per run:
//   node refresh.test.mjs CASE
// The scripted cases play the gateway with the `ws` package (harness.mjs);
// "real-gateway" runs against the gateway tests/browser.rs started (leeway
// 0, 1 s heartbeats, TOKEN_EXPIRING 3 s before the expiry) with tokens that
// live 5 s. Exits non-zero on the first failed expectation.
import {
  count, env, fail, frame, hello, last, launch, mint, openClientPage, parse, scriptedServer, sleep, state, waitFor,
} from "./harness.mjs";

const pageUrl = env("PG_PAGE");
const secret = env("PG_SECRET");

const events = (page, name, event) =>
  page.evaluate(([n, e]) => window.pg.clients[n].events.filter(([x]) => x === e).map(([, v]) => v), [name, event]);

function expect(what, actual, wanted) {
  const a = JSON.stringify(actual);
  const w = JSON.stringify(wanted);
  if (a !== w) fail(`${what}: got ${a}, wanted ${w}`);
}

/**
 * A scripted gateway: HELLO on every connection, then whatever the case
 * does with `server.conns[i]` ({ ws, frames: decoded frames received }).
 * TOKEN_REFRESH is answered by `server.answer(json)` (a frame or null).
 */
async function tokenServer(answer) {
  const conns = [];
  const server = await scriptedServer((ws) => {
    const conn = { ws, frames: [] };
    conns.push(conn);
    ws.send(hello("alice"));
    ws.on("message", (data) => {
      const f = parse(data);
      conn.frames.push(f);
      if (f.action === 9) {
        const reply = answer(f.json, conn);
        if (reply) ws.send(reply);
      }
    });
  });
  server.conns = conns;
  return server;
}

const expiring = (inSecs) => frame(10, { expires_at: Math.floor(Date.now() / 1000) + inSecs, expires_in_secs: inSecs });
const refreshes = (conn) => conn.frames.filter((f) => f.action === 9).map((f) => f.json);

const cases = {
  // TOKEN_EXPIRING -> getToken -> TOKEN_REFRESH {token, seq} -> reply ->
  // "tokenrefreshed"; an ERROR answer -> "tokenrefreshfailed" with its
  // code; getToken returning nothing -> "error", no frame; refreshToken()
  // by hand.
  async "scripted-refresh"(page) {
    let refused = false;
    const server = await tokenServer((json) => (refused
      ? frame(4, { code: "token_expired", message: "the token expired", action: 9, seq: json.seq })
      : frame(9, { expires_at: 1900000000 + json.seq, seq: json.seq })));
    try {
      await page.evaluate((url) => {
        window.tokens = ["t-connect", "t-fresh-1", null, "t-fresh-2", "t-by-hand"];
        window.tokenCalls = 0;
        window.pg.make("a", { url, getToken: async () => window.tokens[window.tokenCalls++] }).connect();
      }, server.url());
      await waitFor("HELLO", () => count(page, "a", "hello"));
      const conn = server.conns[0];
      if (server.connections[0].token !== "t-connect") fail(`connected with ${server.connections[0].token}`);

      // 1. Accepted.
      conn.ws.send(expiring(30));
      await waitFor("tokenrefreshed", () => count(page, "a", "tokenrefreshed"));
      const sent = refreshes(conn);
      if (sent.length !== 1 || sent[0].token !== "t-fresh-1" || typeof sent[0].seq !== "number") {
        fail(`TOKEN_REFRESH frames: ${JSON.stringify(sent)}`);
      }
      expect("tokenexpiring", (await events(page, "a", "tokenexpiring"))[0].expires_in_secs, 30);
      expect("tokenrefreshed", await last(page, "a", "tokenrefreshed"), { expires_at: 1900000000 + sent[0].seq });
      expect("getToken calls", await page.evaluate(() => window.tokenCalls), 2);
      expect("tokenExpiresAt", await page.evaluate(() => window.pg.clients.a.client.tokenExpiresAt), 1900000000 + sent[0].seq);

      // 2. getToken returns nothing: an error event, a failure event, no frame.
      conn.ws.send(expiring(20));
      await waitFor("tokenrefreshfailed (no token)", () => count(page, "a", "tokenrefreshfailed"));
      expect("failure code", (await last(page, "a", "tokenrefreshfailed")).code, "get_token_failed");
      if (!(await events(page, "a", "error")).some((e) => /no token/.test(e))) fail("no error event for a missing token");
      await sleep(300);
      expect("TOKEN_REFRESH frames after a failed getToken", refreshes(conn).length, 1);

      // 3. The gateway refuses: the ERROR's code.
      refused = true;
      conn.ws.send(expiring(10));
      await waitFor("tokenrefreshfailed (ERROR)", async () => (await count(page, "a", "tokenrefreshfailed")) === 2);
      const refusal = await last(page, "a", "tokenrefreshfailed");
      expect("refusal", [refusal.code, refusal.message], ["token_expired", "the token expired"]);
      expect("refused token sent", refreshes(conn).map((r) => r.token), ["t-fresh-1", "t-fresh-2"]);

      // 4. By hand: refreshToken() asks getToken, resolves with the reply.
      refused = false;
      const byHand = await page.evaluate(() => window.pg.clients.a.client.refreshToken());
      const last3 = refreshes(conn).at(-1);
      expect("by hand", [last3.token, byHand.expires_at], ["t-by-hand", 1900000000 + last3.seq]);
      const seqs = refreshes(conn).map((r) => r.seq);
      if (new Set(seqs).size !== seqs.length) fail(`seqs repeat: ${seqs}`);
      expect("still one connection, open", [server.connections.length, await state(page, "a")], [1, "open"]);
    } finally {
      await server.close();
    }
  },

  // A static token cannot be refreshed: no TOKEN_REFRESH frame, an event
  // saying so; refreshToken(token) by hand sends the given token.
  async "scripted-static"(page) {
    const server = await tokenServer((json) => frame(9, { expires_at: 1900000000, seq: json.seq }));
    try {
      await page.evaluate((url) => window.pg.make("a", { url, token: "static-1" }).connect(), server.url());
      await waitFor("HELLO", () => count(page, "a", "hello"));
      server.conns[0].ws.send(expiring(30));
      await waitFor("tokenrefreshfailed", () => count(page, "a", "tokenrefreshfailed"));
      const failure = await last(page, "a", "tokenrefreshfailed");
      if (failure.code !== "static_token" || !/cannot refresh/.test(failure.message)) fail(`event: ${JSON.stringify(failure)}`);
      expect("tokenexpiring", await count(page, "a", "tokenexpiring"), 1);
      await sleep(500);
      expect("TOKEN_REFRESH frames with a static token", refreshes(server.conns[0]).length, 0);
      const reply = await page.evaluate(() => window.pg.clients.a.client.refreshToken("static-2"));
      expect("by hand", [refreshes(server.conns[0]).map((r) => r.token), reply.expires_at], [["static-2"], 1900000000]);
      // A reconnect now uses the token given by hand.
      server.conns[0].ws.close(1011, "bye");
      await waitFor("the reconnect", async () => server.connections.length === 2, 10000);
      expect("reconnect token", server.connections[1].token, "static-2");
    } finally {
      await server.close();
    }
  },

  // 4006 REVOKED: never a blind reconnect with the same token.
  async "scripted-revoked"(page) {
    const server = await tokenServer(() => null);
    try {
      await page.evaluate((url) => {
        window.calls = { same: 0, fresh: 0 };
        const opts = { url, minDelayMs: 50, maxDelayMs: 100 };
        window.pg.make("static", { ...opts, token: "static-token" }).connect();
        window.pg.make("same", { ...opts, getToken: async () => { window.calls.same += 1; return "cached-token"; } });
        window.pg.make("fresh", { ...opts, getToken: async () => `fresh-${++window.calls.fresh}` });
        window.pg.make("failing", {
          ...opts, getToken: async () => { if (window.calls.failing) throw new Error("identity provider down"); window.calls.failing = 1; return "f-1"; },
        });
      }, server.url());
      const byToken = (t) => server.conns[server.connections.findIndex((c) => c.token === t)];
      for (const [name, token] of [["same", "cached-token"], ["fresh", "fresh-1"], ["failing", "f-1"]]) {
        await page.evaluate((n) => window.pg.clients[n].client.connect(), name);
        await waitFor(`${name} HELLO`, () => count(page, name, "hello"));
        await waitFor(`${name} connection`, () => byToken(token));
      }
      await waitFor("static HELLO", () => count(page, "static", "hello"));
      for (const token of ["static-token", "cached-token", "fresh-1", "f-1"]) byToken(token).ws.close(4006, "revoked");

      await waitFor("fresh reconnects with its new token", () => byToken("fresh-2"), 10000);
      await waitFor("revoked events", async () => (await count(page, "static", "revoked")) === 1
        && (await count(page, "same", "revoked")) === 1 && (await count(page, "failing", "revoked")) === 1, 10000);
      await sleep(1000); // nothing else happens
      expect("upgrades", server.connections.map((c) => c.token).sort(),
        ["cached-token", "f-1", "fresh-1", "fresh-2", "static-token"]);
      expect("static", [await last(page, "static", "revoked"), (await last(page, "static", "close")).stopped, await state(page, "static")],
        [{ code: 4006, reason: "static_token" }, "revoked", "closed"]);
      expect("same token: getToken asked once more, then stopped",
        [await page.evaluate(() => window.calls.same), (await last(page, "same", "revoked")).reason, await state(page, "same")],
        [2, "same_token", "closed"]);
      expect("failing getToken", [(await last(page, "failing", "revoked")).reason, await state(page, "failing")],
        ["get_token_failed", "closed"]);
      expect("fresh", [await count(page, "fresh", "revoked"), await count(page, "fresh", "hello"), await state(page, "fresh")],
        [0, 2, "open"]);
      const close = (await events(page, "fresh", "close"))[0];
      expect("fresh close event", [close.code, close.name, close.stopped], [4006, "REVOKED", null]);
    } finally {
      await server.close();
    }
  },

  // The real gateway: tokens of 5 s, TOKEN_EXPIRING 3 s before; the
  // session outlives its first token (and the next ones) by refreshing.
  // Then a revocation: 4006, getToken mints a new token, and the client is
  // back (tokens issued in the revocation's second or later are accepted).
  async "real-gateway"(page) {
    const user = "refresh-rita";
    // A jti per token, as identity providers do: two tokens minted in the
    // same second differ, so the one minted after the revocation is never
    // taken for the revoked one.
    let jti = 0;
    await page.exposeFunction("mintShort", () => mint(secret, user, 5, { jti: `rita-${++jti}` }));
    const gatewayWs = `${pageUrl.replace(/^http/, "ws").replace(/\/$/, "")}/ws`;
    const started = Date.now();
    await page.evaluate((url) => {
      window.minted = 0;
      window.pg.make("a", { url, getToken: async () => { window.minted += 1; return window.mintShort(); } }).connect();
    }, gatewayWs);
    await waitFor("HELLO", () => count(page, "a", "hello"));
    // The first token expired at started + 5 s (at most); stay well past it.
    await waitFor("refreshes", async () => (await count(page, "a", "tokenrefreshed")) >= 3 && Date.now() - started > 9000, 20000);
    expect("one session, never closed", [await count(page, "a", "hello"), await count(page, "a", "close"), await state(page, "a")],
      [1, 0, "open"]);
    expect("no refusals", await events(page, "a", "tokenrefreshfailed"), []);
    const refreshed = await last(page, "a", "tokenrefreshed");
    if (!(refreshed.expires_at * 1000 > Date.now())) fail(`expires_at ${refreshed.expires_at} is not in the future`);
    const info = await page.evaluate(() => window.pg.clients.a.client.request(111));
    expect("FETCH_INFO on the refreshed session", info.user, user);

    const api = async (method, path, body) => {
      const response = await fetch(`${env("PG_API")}${path}`, {
        method, headers: { authorization: `Bearer ${env("PG_API_KEY")}`, "content-type": "application/json" },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      const json = await response.json();
      if (!response.ok) fail(`${method} ${path}: ${response.status} ${JSON.stringify(json)}`);
      return json;
    };
    const push = await api("POST", "/v1/push", { users: [user], payload: { after: "refresh" } });
    expect("push delivered to the refreshed session", push.delivered, 1);
    await waitFor("the push", () => count(page, "a", "push"));

    const mintedBefore = await page.evaluate(() => window.minted);
    await api("POST", `/v1/users/${user}/revoke`);
    await waitFor("4006", async () => (await last(page, "a", "close"))?.code === 4006);
    await waitFor("a new session with a new token", async () => (await count(page, "a", "hello")) === 2, 10000);
    expect("revoked event", await count(page, "a", "revoked"), 0);
    if ((await page.evaluate(() => window.minted)) !== mintedBefore + 1) fail("getToken not asked exactly once after 4006");
  },
};

const name = process.argv[2];
if (!cases[name]) fail(`unknown case ${name}; cases: ${Object.keys(cases).join(", ")}`);
const browser = await launch();
try {
  const { page, pageErrors } = await openClientPage(browser, pageUrl);
  await cases[name](page);
  if (pageErrors.length) fail(`page errors: ${pageErrors.join("; ")}`);
  console.log(`refresh test ${name}: all expectations met`);
} finally {
  await browser.close();
}
