// pushgate.js in a real headless Chromium, one case per run:
//   node client.test.mjs CASE
// Run by tests/browser.rs with the real gateway's addresses in the
// environment (the page and /pushgate.js come from that gateway); the
// misbehaving-server cases add a scripted WebSocket server (harness.mjs).
// Exits non-zero on the first failed expectation.
import {
  api, count, env, fail, frame, hello, last, launch, mint, openClientPage, parse, scriptedServer, sleep, state,
  waitFor,
} from "./harness.mjs";

const pageUrl = env("PG_PAGE");
const gatewayWs = `${pageUrl.replace(/^http/, "ws").replace(/\/$/, "")}/ws`;
const gateway = api(env("PG_API"), env("PG_API_KEY"));
const secret = env("PG_SECRET");

const cases = {
  // Replies from the real gateway: FETCH_INFO, PING -> PONG, an ERROR, and a
  // backend push that carries a "seq" field of its own.
  async "gateway-replies"(page) {
    const token = await mint(secret, "erin", 3600);
    await page.evaluate(([url, token]) => window.pg.make("a", { url, token }).connect(), [gatewayWs, token]);
    await waitFor("HELLO", () => count(page, "a", "hello"));
    const result = await page.evaluate(async () => {
      const c = window.pg.clients.a.client;
      const info = await c.request(111);
      const pong = await c.request(2);
      const error = await c.request(110, { friend: "erin" }).then(() => null, (e) => ({ code: e.code, action: e.action }));
      return { info, pong, error };
    });
    if (result.info.user !== "erin") fail(`FETCH_INFO resolved with ${JSON.stringify(result.info)}`);
    if (typeof result.pong.server_time_ms !== "number") fail(`PING resolved with ${JSON.stringify(result.pong)}`);
    if (!result.error || result.error.code !== "self_friend" || result.error.action !== 110) {
      fail(`ADD_FRIEND to self should reject with self_friend, got ${JSON.stringify(result.error)}`);
    }
    const answer = await gateway.push(["erin"], { seq: 4, text: "a push with a seq of its own" });
    if (answer.delivered !== 1) fail(`push not delivered: ${JSON.stringify(answer)}`);
    await waitFor("the push event", () => count(page, "a", "push"));
    const push = await last(page, "a", "push");
    if (push.action !== 200 || push.json.text !== "a push with a seq of its own") fail(`push: ${JSON.stringify(push)}`);
  },

  // Finding 5: a push whose payload carries "seq": N arrives while request N
  // is in flight (the scripted server sends it just before the reply). The
  // request must resolve with the reply and the push must fire as a push.
  async "reply-matching"(page) {
    const server = await scriptedServer((ws) => {
      ws.send(hello());
      ws.on("message", (data) => {
        const { action, json } = parse(data);
        const seq = json.seq;
        ws.send(frame(200, { seq, note: `backend push carrying seq ${seq}` }));
        if (action === 111) ws.send(frame(111, { user: "scripted", seq }));
        else if (action === 2) ws.send(frame(3, { server_time_ms: 1, seq }));
        else ws.send(frame(4, { code: "self_friend", message: "you cannot add yourself", action, seq }));
      });
    });
    try {
      await page.evaluate((url) => window.pg.make("a", { url, token: "t" }).connect(), server.url());
      await waitFor("HELLO", () => count(page, "a", "hello"));
      const result = await page.evaluate(async () => {
        const c = window.pg.clients.a.client;
        const settle = (p) => p.then((value) => ({ value }), (e) => ({ error: { message: e.message, code: e.code } }));
        return {
          info: await settle(c.request(111)),
          pong: await settle(c.request(2)),
          added: await settle(c.request(110, { friend: "scripted" })),
        };
      });
      if (!result.info.value || result.info.value.user !== "scripted") {
        fail(`request(FETCH_INFO) settled with ${JSON.stringify(result.info)}, not the FETCH_INFO reply`);
      }
      if (!result.pong.value || result.pong.value.server_time_ms !== 1) {
        fail(`request(PING) settled with ${JSON.stringify(result.pong)}, not the PONG`);
      }
      if (!result.added.error || result.added.error.code !== "self_friend") {
        fail(`request(ADD_FRIEND) settled with ${JSON.stringify(result.added)}, not the ERROR`);
      }
      const pushes = await page.evaluate(() => window.pg.clients.a.events.filter(([e]) => e === "push").map(([, v]) => v));
      if (pushes.length !== 3 || pushes.some((p) => p.action !== 200 || !p.json.note)) {
        fail(`expected the 3 pushes as push events, got ${JSON.stringify(pushes)}`);
      }
    } finally {
      await server.close();
    }
  },

  // Finding 6: close(); connect(); must leave one working session, and a
  // later close() must end it. Also connect() twice opens one session.
  async "close-then-connect"(page) {
    const token = await mint(secret, "frank", 3600);
    await page.evaluate(([url, token]) => window.pg.make("a", { url, token }).connect(), [gatewayWs, token]);
    await waitFor("first HELLO", () => count(page, "a", "hello"));
    await page.evaluate(() => { const c = window.pg.clients.a.client; c.close(); c.connect(); });
    await waitFor("second HELLO", async () => (await count(page, "a", "hello")) === 2);
    await sleep(500); // the old socket's close event has long arrived by now
    if ((await state(page, "a")) !== "open") fail(`state after close(); connect() is ${await state(page, "a")}`);
    const info = await page.evaluate(() => window.pg.clients.a.client.request(111).then((r) => r, (e) => e.message));
    if (!info || info.user !== "frank") fail(`request after close(); connect(): ${JSON.stringify(info)}`);
    if ((await gateway.sessions("frank")) !== 1) fail(`${await gateway.sessions("frank")} gateway sessions, expected 1`);
    const answer = await gateway.push(["frank"], { n: 1 });
    if (answer.delivered !== 1) fail(`push delivered to ${answer.delivered} sessions, expected 1`);
    await waitFor("the push event", () => count(page, "a", "push"));

    await page.evaluate(() => window.pg.clients.a.client.close());
    await waitFor("state closed", async () => (await state(page, "a")) === "closed");
    await waitFor("the gateway session to end after close()", async () => (await gateway.sessions("frank")) === 0, 5000);

    const token2 = await mint(secret, "gina", 3600);
    await page.evaluate(([url, token]) => { const c = window.pg.make("b", { url, token }); c.connect(); c.connect(); },
      [gatewayWs, token2]);
    await waitFor("HELLO", () => count(page, "b", "hello"));
    await sleep(500);
    if ((await gateway.sessions("gina")) !== 1) fail(`connect(); connect() opened ${await gateway.sessions("gina")} sessions`);
    await page.evaluate(() => window.pg.clients.b.client.close());
    await waitFor("the gateway session to end after close()", async () => (await gateway.sessions("gina")) === 0, 5000);
  },

  // Finding 7: close() while getToken is still pending must not connect.
  async "close-while-token-pending"(page) {
    const token = await mint(secret, "hank", 3600);
    await page.evaluate(([url, token]) => {
      let release;
      const pending = new Promise((resolve) => { release = () => resolve(token); });
      window.releaseToken = release;
      const c = window.pg.make("a", { url, getToken: () => pending });
      c.connect();
      c.close();
    }, [gatewayWs, token]);
    await page.evaluate(() => window.releaseToken());
    await sleep(1500);
    const s = await state(page, "a");
    if (s !== "closed") fail(`state after close() during getToken is ${s}, expected closed`);
    if (await count(page, "a", "hello")) fail("a HELLO arrived after close()");
    if ((await gateway.sessions("hank")) !== 0) fail(`close() during getToken left ${await gateway.sessions("hank")} live sessions`);
  },

  // Finding 8: a RECONNECT hint with after_ms 0 means "now", not "use backoff".
  async "reconnect-hint-zero"(page) {
    const server = await scriptedServer((ws, path) => {
      ws.send(hello());
      const n = server.connections.filter((c) => c.path === path).length;
      if (n === 1) {
        ws.send(frame(5, { after_ms: path === "/zero" ? 0 : 300, reason: "drain" }));
        ws.close(1012, "restart");
      }
    });
    try {
      // Backoff alone would wait a random 0-60 s here.
      const options = { token: "t", minDelayMs: 60000, maxDelayMs: 60000 };
      await page.evaluate(([zero, three, options]) => {
        window.pg.make("zero", { ...options, url: zero }).connect();
        window.pg.make("three", { ...options, url: three }).connect();
      }, [server.url("/zero"), server.url("/three"), options]);
      await waitFor("the reconnect after a 0 ms hint", async () => (await count(page, "zero", "hello")) === 2, 5000);
      await waitFor("the reconnect after a 300 ms hint", async () => (await count(page, "three", "hello")) === 2, 5000);
      const zero = await last(page, "zero", "close");
      const three = await last(page, "three", "close");
      if (zero.reconnectInMs !== 0) fail(`after_ms 0: reconnectInMs ${zero.reconnectInMs}`);
      if (three.reconnectInMs !== 300) fail(`after_ms 300: reconnectInMs ${three.reconnectInMs}`);
    } finally {
      await server.close();
    }
  },

  // Finding 9: a server that closes right after HELLO must see the client
  // back off, not reconnect several times a second forever.
  async "backoff-after-hello-then-close"(page) {
    const codes = [4001, 4000, 4003, 1011, 1008, 1012];
    const server = await scriptedServer((ws, path) => {
      ws.send(hello());
      setTimeout(() => ws.close(Number(path.slice(2)), "scripted"), 20);
    });
    try {
      await page.evaluate((urls) => {
        for (const url of urls) window.pg.make(url, { url, getToken: async () => "t" }).connect();
      }, codes.map((code) => server.url(`/c${code}`)));
      const windowMs = 3000;
      await sleep(windowMs);
      await page.evaluate(() => { for (const { client } of Object.values(window.pg.clients)) client.close(); });
      const reconnects = Object.fromEntries(codes.map((code) =>
        [code, server.connections.filter((c) => c.path === `/c${code}`).length - 1]));
      const total = Object.values(reconnects).reduce((a, b) => a + b, 0);
      console.log(`reconnects in ${windowMs} ms: ${JSON.stringify(reconnects)} (total ${total})`);
      for (const [code, n] of Object.entries(reconnects)) {
        if (n < 1) fail(`close ${code} should still be retried, got ${n} reconnects`);
        if (n >= 10) fail(`close ${code} right after HELLO: ${n} reconnects in ${windowMs} ms, no backoff`);
      }
      // Resetting on every HELLO gives about 9-12 per code (50-70 in all); backing off about 3 (~18).
      if (total >= 30) fail(`${total} reconnects in ${windowMs} ms over ${codes.length} servers: no backoff`);
    } finally {
      await server.close();
    }
  },

  // The other half of finding 9: once a connection stayed up healthyAfterMs,
  // the next reconnect starts again from the smallest delay.
  async "backoff-resets-after-a-healthy-connection"(page) {
    const quick = 8;
    const server = await scriptedServer((ws, path) => {
      ws.send(hello());
      const n = server.connections.length;
      setTimeout(() => ws.close(1011, "scripted"), n <= quick ? 10 : 800);
    });
    try {
      // After 8 quick failures the backoff cap is 10 ms * 2^8 = 2.56 s; a reset brings it back to 10 ms.
      await page.evaluate((url) => window.pg.make("a", { url, token: "t", minDelayMs: 10, maxDelayMs: 60000,
        healthyAfterMs: 500 }).connect(), server.url());
      await waitFor("the close of the healthy connection", async () => (await count(page, "a", "close")) === quick + 1,
        20000);
      const closes = await page.evaluate(() => window.pg.clients.a.events.filter(([e]) => e === "close").map(([, v]) => v));
      const afterHealthy = closes[quick].reconnectInMs;
      console.log(`reconnect delays: ${closes.map((c) => c.reconnectInMs).join(", ")}`);
      if (!(afterHealthy < 10)) fail(`after a healthy connection the delay was ${afterHealthy} ms, expected < 10 ms`);
      await page.evaluate(() => window.pg.clients.a.client.close());
    } finally {
      await server.close();
    }
  },

  // Finding 10 (library part): after TOKEN_EXPIRED the client fetches a new
  // token through getToken; with a static token it stops instead of retrying
  // a token the gateway will refuse.
  async "token-expired"(page) {
    const short1 = await mint(secret, "ivan", 2);
    const short2 = await mint(secret, "judy", 2);
    const fresh = await mint(secret, "judy", 3600);
    await page.evaluate(([url, short1, short2, fresh]) => {
      window.pg.make("static", { url, token: short1, minDelayMs: 50 }).connect();
      const tokens = [short2, fresh];
      window.tokenCalls = 0;
      // autoRefresh off: TOKEN_EXPIRING would otherwise refresh the session
      // (refresh.test.mjs covers that) and 4003 never come.
      window.pg.make("refresh", {
        url, minDelayMs: 50, autoRefresh: false,
        getToken: async () => tokens[Math.min(window.tokenCalls++, tokens.length - 1)],
      }).connect();
    }, [gatewayWs, short1, short2, fresh]);
    await waitFor("4003 on the static-token client", async () => (await last(page, "static", "close"))?.code === 4003, 10000);
    await waitFor("a new session with the refreshed token", async () => (await count(page, "refresh", "hello")) === 2, 10000);
    if ((await page.evaluate(() => window.tokenCalls)) !== 2) fail("getToken not called once per connection");
    const expired = await last(page, "static", "close");
    if (expired.reconnectInMs !== null) fail(`static token: reconnect scheduled after 4003 (${JSON.stringify(expired)})`);
    await sleep(1000);
    if ((await state(page, "static")) !== "closed") fail(`static token after 4003: state ${await state(page, "static")}`);
    if ((await count(page, "static", "close")) !== 1) fail("static token: retried the expired token after 4003");
  },
};

const name = process.argv[2];
if (!cases[name]) fail(`unknown case ${name}; cases: ${Object.keys(cases).join(", ")}`);
const browser = await launch();
try {
  const { page, pageErrors } = await openClientPage(browser, pageUrl);
  await cases[name](page);
  if (pageErrors.length) fail(`page errors: ${pageErrors.join("; ")}`);
  console.log(`client test ${name}: all expectations met`);
} finally {
  await browser.close();
}
