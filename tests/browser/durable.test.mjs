// Durable delivery in pushgate.js (and the console), in a real headless
// Chromium against a scripted WebSocket server (harness.mjs) that plays the
// gateway's side of proto-spec section 8: replay, SYNCED, live MESSAGE
// frames, ACK replies; and one case against the real gateway. One case per
// run:
//   node durable.test.mjs CASE
// Exits non-zero on the first failed expectation.
import {
  count, env, fail, frame, frameText, hello, last, launch, message, mint, openClientPage, parseAck, scriptedServer,
  sleep, waitFor,
} from "./harness.mjs";

const pageUrl = env("PG_PAGE");

const events = (page, name, event) =>
  page.evaluate(([n, e]) => window.pg.clients[n].events.filter(([k]) => k === e).map(([, v]) => v), [name, event]);
const eventNames = (page, name) => page.evaluate((n) => window.pg.clients[n].events.map(([k]) => k), name);
const ids = (list) => list.map((m) => m.id);
const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);
const expect = (what, actual, wanted) => {
  if (!same(actual, wanted)) fail(`${what}: got ${JSON.stringify(actual)}, expected ${JSON.stringify(wanted)}`);
};

/**
 * A scripted gateway that records, per connection, the ACK frames it got and
 * answers each ACK that carries a seq (`answer(ack, conn)` may return a
 * frame to send instead). `script(ws, conn)` plays the rest.
 */
async function durableServer(script, answer = null) {
  const conns = [];
  const server = await scriptedServer((ws, path, request) => {
    const url = new URL(request.url, "http://x");
    const conn = { path, params: url.searchParams, acks: [], ws };
    conns.push(conn);
    ws.on("message", (data) => {
      const ack = parseAck(data);
      if (!ack) return;
      conn.acks.push(ack);
      if (ack.seq === null) return;
      const custom = answer && answer(ack, conn);
      const upto = ack.upto ?? "0";
      ws.send(custom || frameText(7, `{"upto":${upto},"pending":0,"seq":${ack.seq}}`));
    });
    script(ws, conn);
  });
  return { ...server, conns };
}

const ackedIds = (conn) => conn.acks.flatMap((a) => a.ids);

const cases = {
  // Replay, SYNCED, live: the app sees each id once, in order, with
  // replayed/live; acks arrive batched with the right ids; the first ACK is
  // answered ERROR internal and its ids come again.
  async "replay-then-live"(page) {
    const server = await durableServer((ws) => {
      ws.send(hello());
      ws.send(message(1, 200, { n: 1 }));
      ws.send(message(2, 210, { from: "bob", message: null }));
      ws.send(frame(8, { last_id: 2, replayed: 2, gap: false }));
      setTimeout(() => ws.send(message(4, 1001, Buffer.from([0xde, 0xad]))), 150);
    }, (ack, conn) => (conn.acks.length === 1
      ? frame(4, { code: "internal", message: "inbox unavailable", action: 7, seq: ack.seq })
      : null));
    try {
      await page.evaluate((url) => window.pg.make("a", { url, token: "t", confirmAcks: true }).connect(), server.url());
      await waitFor("3 messages", async () => (await count(page, "a", "message")) === 3);
      const conn = server.conns[0];
      if (conn.params.get("resume") !== "1" || conn.params.has("since")) fail(`upgrade query: ${conn.params}`);
      const messages = await events(page, "a", "message");
      expect("message ids", ids(messages), ["1", "2", "4"]);
      expect("replayed flags", messages.map((m) => m.replayed), [true, true, false]);
      expect("inner frames", messages.map((m) => [m.action, m.json ?? m.hex]),
        [[200, { n: 1 }], [210, { from: "bob", message: null }], [1001, "dead"]]);
      const order = (await eventNames(page, "a")).filter((e) => e === "message" || e === "synced");
      expect("order of messages and SYNCED", order, ["message", "message", "synced", "message"]);
      expect("SYNCED", await last(page, "a", "synced"), { last_id: "2", replayed: 2, gap: false, first_id: null });
      if (await count(page, "a", "gap")) fail("a gap event without a gap");
      // The same messages reached "push" listeners, like plain pushes, with their id.
      expect("push events", ids(await events(page, "a", "push")), ["1", "2", "4"]);

      await waitFor("acks for 1, 2 and 4", () => ["1", "2", "4"].every((id) => ackedIds(conn).includes(id)));
      await waitFor("an answered ACK", () => count(page, "a", "acked"));
      for (const ack of conn.acks) {
        if (ack.seq === null) fail(`an ACK without seq: ${ack.text}`);
        if (ack.ids.length === 0 || ack.ids.length > 1024) fail(`ACK of ${ack.ids.length} ids`);
      }
      const first = conn.acks[0].ids;
      const later = conn.acks.slice(1).flatMap((a) => a.ids);
      if (!first.every((id) => later.includes(id))) fail(`ids of the ACK answered ERROR internal not acked again: ${JSON.stringify(conn.acks.map((a) => a.text))}`);
      if (conn.acks.length > 4) fail(`not batched: ${conn.acks.length} ACK frames for 3 messages and one retry`);
      const errors = await events(page, "a", "error");
      if (errors.length !== 1 || !errors[0].includes("inbox unavailable")) fail(`errors: ${JSON.stringify(errors)}`);
      expect("lastId", await page.evaluate(() => window.pg.clients.a.client.lastId), "4");
      const acked = await last(page, "a", "acked");
      if (acked.pending !== 0 || typeof acked.position !== "string") fail(`acked event: ${JSON.stringify(acked)}`);
    } finally {
      await server.close();
    }
  },

  // 2500 replayed messages: ACK frames never carry more than 1024 ids (even
  // asked for more; a 5 s batch delay makes the sizes exact), the default
  // batches at most 64, every id acked once.
  async "big-replay-batches"(page) {
    const total = 2500;
    const server = await durableServer((ws) => {
      ws.send(hello());
      for (let id = 1; id <= total; id += 1) ws.send(message(id, 200, { id }));
      ws.send(frame(8, { last_id: total, replayed: total, gap: false }));
    });
    try {
      await page.evaluate(([big, dflt]) => {
        window.pg.make("big", { url: big, token: "t", ackBatchMax: 5000, ackBatchMs: 5000 }).connect();
        window.pg.make("default", { url: dflt, token: "t" }).connect();
      }, [server.url("/big"), server.url("/default")]);
      const all = Array.from({ length: total }, (_, i) => String(i + 1));
      for (const path of ["/big", "/default"]) {
        await waitFor(`every id acked on ${path}`, () => {
          const conn = server.conns.find((c) => c.path === path);
          return conn && ackedIds(conn).length >= total;
        }, 20000);
      }
      await sleep(300);
      for (const path of ["/big", "/default"]) {
        const conn = server.conns.find((c) => c.path === path);
        const acked = ackedIds(conn);
        expect(`ids acked on ${path}`, [...acked].sort((a, b) => Number(a) - Number(b)), all);
        const sizes = conn.acks.map((a) => a.ids.length);
        const cap = path === "/big" ? 1024 : 64;
        if (Math.max(...sizes) > cap) fail(`${path}: an ACK of ${Math.max(...sizes)} ids (cap ${cap})`);
        console.log(`${path}: ${conn.acks.length} ACK frames, sizes ${sizes.slice(0, 8).join(",")}...`);
        if (path === "/big") expect("ACK sizes with ackBatchMax 5000", sizes, [1024, 1024, 452]);
        // By default nothing asks for an answer (confirmAcks false).
        if (conn.acks.some((a) => a.seq !== null)) fail(`${path}: an ACK with a seq: ${conn.acks[0].text}`);
      }
      const messages = await events(page, "default", "message");
      if (messages.length !== total || messages.some((m, i) => m.id !== all[i] || !m.replayed)) {
        fail("the 2500 replayed messages were not handed over once each, in order");
      }
    } finally {
      await server.close();
    }
  },

  // autoAck: false sends nothing until ack() / ackUpTo().
  async "manual-ack"(page) {
    const server = await durableServer((ws) => {
      ws.send(hello());
      ws.send(message(1, 200, { n: 1 }));
      ws.send(message(2, 200, { n: 2 }));
      ws.send(frame(8, { last_id: 2, replayed: 2, gap: false }));
      ws.send(message(3, 200, { n: 3 }));
    });
    try {
      await page.evaluate((url) => window.pg.make("a", { url, token: "t", autoAck: false }).connect(), server.url());
      await waitFor("3 messages", async () => (await count(page, "a", "message")) === 3);
      await sleep(700);
      const conn = server.conns[0];
      if (conn.acks.length) fail(`manual mode sent ACKs by itself: ${conn.acks.map((a) => a.text)}`);
      await page.evaluate(() => window.pg.clients.a.client.ack("2"));
      await waitFor("the ACK of 2", () => conn.acks.length === 1);
      expect("ack(2)", [conn.acks[0].ids, conn.acks[0].upto], [["2"], null]);
      await page.evaluate(() => window.pg.clients.a.client.ackUpTo(3n));
      await waitFor("the ACK upto 3", () => conn.acks.length === 2);
      expect("ackUpTo(3)", [conn.acks[1].ids, conn.acks[1].upto], [[], "3"]);
      await sleep(300);
      if (conn.acks.length !== 2) fail(`extra ACKs: ${conn.acks.map((a) => a.text)}`);
      const bad = await page.evaluate(() => { try { window.pg.clients.a.client.ack("x1"); return null; } catch (e) { return e.message; } });
      if (!bad) fail("ack() of a non-id did not throw");
    } finally {
      await server.close();
    }
  },

  // The ack waits for the handler's promise; SYNCED waits for the replayed
  // message before it. A handler that throws leaves its message unacked and
  // forgotten, so the next connection's replay delivers it again.
  async "ack-after-handler"(page) {
    const server = await durableServer((ws, conn) => {
      ws.send(hello());
      if (server.conns.length === 1) {
        ws.send(message(7, 200, { n: 7 }));
        ws.send(frame(8, { last_id: 7, replayed: 1, gap: false }));
        ws.send(message(8, 200, { n: 8, fail: true }));
      } else {
        ws.send(message(8, 200, { n: 8 }));
        ws.send(frame(8, { last_id: 8, replayed: 1, gap: false }));
      }
      conn.ready = true;
    });
    try {
      await page.evaluate((url) => {
        window.releases = {};
        window.failedOnce = false;
        window.pg.make("a", {
          url, token: "t", minDelayMs: 10, maxDelayMs: 20,
          onMessage: (m) => {
            if (m.json.fail && !window.failedOnce) { window.failedOnce = true; throw new Error("handler failed"); }
            if (m.id === "7") return new Promise((resolve) => { window.releases[m.id] = resolve; });
            return undefined;
          },
        }).connect();
      }, server.url());
      await waitFor("message 7 handed over", () => page.evaluate(() => Boolean(window.releases["7"])));
      await sleep(600);
      const conn = server.conns[0];
      if (conn.acks.length) fail(`acked before the handler's promise resolved: ${conn.acks.map((a) => a.text)}`);
      if (await count(page, "a", "synced")) fail("SYNCED fired before the replayed message was handled");
      await page.evaluate(() => window.releases["7"]());
      await waitFor("the ACK of 7", () => ackedIds(conn).includes("7"));
      await waitFor("SYNCED", () => count(page, "a", "synced"));
      await waitFor("the failing handler's error", async () => (await events(page, "a", "error")).includes("handler failed"));
      await sleep(400);
      if (ackedIds(conn).includes("8")) fail("message 8 acked although its handler threw");
      conn.ws.close(1011, "scripted");
      await waitFor("the second connection's ACK of 8", () => server.conns[1] && ackedIds(server.conns[1]).includes("8"));
      const eights = (await events(page, "a", "message")).filter((m) => m.id === "8");
      expect("message 8 handed over twice (failed, then replayed)", eights.map((m) => m.replayed), [false, true]);
    } finally {
      await server.close();
    }
  },

  // A reconnect replays messages whose acks were lost: not handed to the
  // app again (it already handled them), but acked again.
  async "reconnect-dedupe"(page) {
    const server = await durableServer((ws) => {
      ws.send(hello());
      if (server.conns.length === 1) {
        ws.send(message(5, 200, { n: 5 }));
        ws.send(message(6, 200, { n: 6 }));
        ws.send(frame(8, { last_id: 6, replayed: 2, gap: false }));
        setTimeout(() => ws.close(1011, "scripted"), 5); // before the 50 ms ack batch
      } else {
        ws.send(message(5, 200, { n: 5 }));
        ws.send(message(6, 200, { n: 6 }));
        ws.send(frame(8, { last_id: 6, replayed: 2, gap: false }));
        ws.send(message(7, 200, { n: 7 }));
      }
    });
    try {
      await page.evaluate((url) => window.pg.make("a", { url, token: "t", minDelayMs: 10, maxDelayMs: 20 }).connect(),
        server.url());
      await waitFor("message 7", async () => (await events(page, "a", "message")).some((m) => m.id === "7"));
      const second = server.conns[1];
      await waitFor("acks of 5, 6, 7 on the second connection", () => ["5", "6", "7"].every((id) => ackedIds(second).includes(id)));
      expect("messages handed to the app", ids(await events(page, "a", "message")), ["5", "6", "7"]);
      expect("duplicates recognized", ids(await events(page, "a", "duplicate")), ["5", "6"]);
      if (second.params.get("resume") !== "1") fail(`reconnect query: ${second.params}`);
      expect("SYNCED per connection", (await events(page, "a", "synced")).length, 2);
      expect("lastId", await page.evaluate(() => window.pg.clients.a.client.lastId), "7");
    } finally {
      await server.close();
    }
  },

  // The gateway forgot the inbox (ids start over): SYNCED's last_id is
  // below ours. Reported as a gap (reset), and the new small ids are
  // handed to the app, not taken for replays.
  async "inbox-reset"(page) {
    const server = await durableServer((ws) => {
      ws.send(hello());
      if (server.conns.length === 1) {
        ws.send(message(5, 200, { n: 5 }));
        ws.send(frame(8, { last_id: 5, replayed: 1, gap: false }));
        setTimeout(() => ws.close(1011, "scripted"), 200);
      } else {
        ws.send(frame(8, { last_id: 0, replayed: 0, gap: false }));
        setTimeout(() => ws.send(message(1, 200, { n: 1 })), 50);
      }
    });
    try {
      await page.evaluate((url) => window.pg.make("a", { url, token: "t", minDelayMs: 10, maxDelayMs: 20 }).connect(),
        server.url());
      await waitFor("message 1 after the reset", async () => (await events(page, "a", "message")).some((m) => m.id === "1"));
      expect("messages handed to the app", ids(await events(page, "a", "message")), ["5", "1"]);
      const gaps = await events(page, "a", "gap");
      expect("one gap, a reset", gaps.map((g) => [g.gap, g.reset]), [[true, true]]);
      expect("lastId follows the gateway", await page.evaluate(() => window.pg.clients.a.client.lastId), "1");
    } finally {
      await server.close();
    }
  },

  // u64 ids beyond 2^53 survive the MESSAGE header, the SYNCED and ACK JSON
  // both ways; a gap surfaces as "gap" with first_id.
  async "gap-and-bigint"(page) {
    const [a, b] = ["9223372036854775813", "18446744073709551615"];
    const server = await durableServer((ws) => {
      ws.send(hello());
      ws.send(message(a, 200, { big: true }));
      ws.send(message(b, 1000, Buffer.from("opaque")));
      ws.send(frameText(8, `{"last_id":${b},"replayed":2,"gap":true,"first_id":${a}}`));
    }, (ack) => frameText(7, `{"upto":${b},"pending":0,"seq":${ack.seq}}`));
    try {
      await page.evaluate((url) => window.pg.make("a", { url, token: "t", confirmAcks: true }).connect(), server.url());
      await waitFor("the gap event", () => count(page, "a", "gap"));
      expect("message ids", ids(await events(page, "a", "message")), [a, b]);
      expect("SYNCED", await last(page, "a", "synced"), { last_id: b, replayed: 2, gap: true, first_id: a });
      expect("gap", await last(page, "a", "gap"), { last_id: b, replayed: 2, gap: true, first_id: a });
      const conn = server.conns[0];
      await waitFor("the ACK", () => ackedIds(conn).length === 2);
      expect("acked ids, digit for digit", ackedIds(conn), [a, b]);
      if (!conn.acks[0].text.includes(`[${a},${b}]`)) fail(`ids not written as exact JSON numbers: ${conn.acks[0].text}`);
      await waitFor("the ACK reply", () => count(page, "a", "acked"));
      expect("position from the ACK reply", (await last(page, "a", "acked")).position, b);
      expect("lastId", await page.evaluate(() => window.pg.clients.a.client.lastId), b);
      await sleep(200);
      expect("gap reported", await count(page, "a", "gap"), 1);
    } finally {
      await server.close();
    }
  },

  // since=ID on the upgrade URL until the first SYNCED, resume=1 after;
  // resume: false asks for neither.
  async "since-and-resume-url"(page) {
    const server = await durableServer((ws, conn) => {
      ws.send(hello());
      if (conn.path === "/since" && server.conns.filter((c) => c.path === "/since").length === 1) {
        ws.send(frame(8, { last_id: 41, replayed: 0, gap: false }));
        ws.send(frame(5, { after_ms: 0, reason: "drain" }));
        setTimeout(() => ws.close(1012, "restart"), 50);
      }
    });
    try {
      await page.evaluate(([since, big, off]) => {
        window.pg.make("since", { url: since, token: "t", since: "41" }).connect();
        window.pg.make("big", { url: big, token: "t", since: 2n ** 64n - 1n }).connect();
        window.pg.make("off", { url: off, token: "t", resume: false }).connect();
      }, [server.url("/since"), server.url("/big"), server.url("/off")]);
      await waitFor("the reconnect after SYNCED", async () => (await count(page, "since", "hello")) === 2);
      await waitFor("the other clients", async () => (await count(page, "big", "hello")) && (await count(page, "off", "hello")));
      const query = (path) => server.conns.filter((c) => c.path === path).map((c) => c.params.toString());
      expect("/since queries", query("/since"), ["since=41&token=t", "resume=1&token=t"]);
      expect("/big query", query("/big"), ["since=18446744073709551615&token=t"]);
      expect("/off query", query("/off"), ["token=t"]);
      expect("lastId from SYNCED", await page.evaluate(() => window.pg.clients.since.client.lastId), "41");
      const bad = await page.evaluate((url) => {
        try { window.pg.make("bad", { url, token: "t", since: "-1" }); return null; } catch (e) { return e.message; }
      }, server.url("/bad"));
      if (!bad || !bad.includes("since")) fail(`since: "-1" accepted (${bad})`);
    } finally {
      await server.close();
    }
  },

  // Against the real gateway: messages pushed with persist while the user
  // is away are replayed, then a live one; all acked (the inbox says
  // nothing is pending); a new client on the same device gets no replay.
  async "real-gateway"(page) {
    const user = "durable-lee";
    const call = async (method, path, body) => {
      const response = await fetch(`${env("PG_API")}${path}`, {
        method,
        headers: { authorization: `Bearer ${env("PG_API_KEY")}`, "content-type": "application/json" },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      const json = await response.json();
      if (!response.ok) fail(`${method} ${path}: ${response.status} ${JSON.stringify(json)}`);
      return json;
    };
    const persist = async (n) => {
      const answer = await call("POST", "/v1/push", { users: [user], persist: true, payload: { n } });
      const id = answer.message_ids && answer.message_ids[user];
      if (typeof id !== "number") fail(`no message id in ${JSON.stringify(answer)}`);
      return { id: String(id), delivered: answer.delivered };
    };
    const first = await persist(1);
    const second = await persist(2);
    if (first.delivered !== 0 || second.delivered !== 0) fail("the user was online");
    const gatewayWs = `${pageUrl.replace(/^http/, "ws").replace(/\/$/, "")}/ws`;
    const token = await mint(env("PG_SECRET"), user, 3600);
    await page.evaluate(([url, token]) => window.pg.make("a", { url, token }).connect(), [gatewayWs, token]);
    await waitFor("SYNCED after the replay", () => count(page, "a", "synced"));
    const replayed = await events(page, "a", "message");
    expect("replayed ids", ids(replayed), [first.id, second.id]);
    expect("replayed payloads", replayed.map((m) => [m.action, m.json, m.replayed]), [[200, { n: 1 }, true], [200, { n: 2 }, true]]);
    const synced = await last(page, "a", "synced");
    expect("SYNCED", [synced.last_id, synced.replayed, synced.gap], [second.id, 2, false]);

    const live = await persist(3);
    if (live.delivered !== 1) fail(`the live durable push reached ${live.delivered} sessions`);
    await waitFor("the live message", async () => (await count(page, "a", "message")) === 3);
    const third = (await events(page, "a", "message"))[2];
    expect("live message", [third.id, third.json, third.replayed], [live.id, { n: 3 }, false]);

    await waitFor("every message acked (inbox: nothing pending for the device)", async () => {
      const inbox = await call("GET", `/v1/users/${user}/inbox`);
      const device = inbox.devices && inbox.devices.default;
      return device && device.pending === 0 && String(device.acked_upto) === live.id;
    });
    // The default asks for no answers: the acks above were stored all the same.
    const sentAcks = await events(page, "a", "ack");
    if (!sentAcks.length || sentAcks.some((a) => a.seq !== null)) fail(`ACKs sent: ${JSON.stringify(sentAcks)}`);
    if (await count(page, "a", "acked")) fail("an ACK answered although none asked");

    // Reconnect with a fresh client (no memory of handled ids, like a
    // reload): the server replays nothing.
    await page.evaluate(() => window.pg.clients.a.client.close());
    await waitFor("the first session gone", async () =>
      (await call("GET", `/v1/users/${user}/sessions`)).sessions.length === 0, 5000);
    await page.evaluate(([url, token]) => window.pg.make("b", { url, token }).connect(), [gatewayWs, token]);
    await waitFor("SYNCED on reconnect", () => count(page, "b", "synced"));
    await sleep(300);
    expect("messages replayed again", await count(page, "b", "message"), 0);
    const again = await last(page, "b", "synced");
    expect("SYNCED on reconnect", [again.last_id, again.replayed, again.gap], [live.id, 0, false]);
    await page.evaluate(() => window.pg.clients.b.client.close());
  },

  // The console shows message ids, replayed vs live, the acks it sent,
  // SYNCED and the gap.
  async console(page) {
    const server = await durableServer((ws) => {
      ws.send(hello());
      ws.send(message(31, 200, { title: "replayed one" }));
      ws.send(frameText(8, '{"last_id":31,"replayed":1,"gap":true,"first_id":31}'));
      setTimeout(() => ws.send(message(32, 200, { title: "live one" })), 100);
    });
    try {
      await page.fill("#url", server.url());
      await page.fill("#token", "t");
      await page.click("#connect");
      const logHas = (text) => page.locator("#log li", { hasText: text }).first().waitFor({ timeout: 10000 });
      await logHas('6 MESSAGE id=31 replayed 200 PUSH {"title":"replayed one"}');
      await logHas("8 SYNCED last_id=31 replayed=1 gap=true first_id=31");
      await logHas("gap:");
      await logHas('6 MESSAGE id=32 live 200 PUSH {"title":"live one"}');
      await logHas('-> 7 ACK {"ids":[31');
      await waitFor("both ids acked", () => ["31", "32"].every((id) => ackedIds(server.conns[0]).includes(id)));
      await page.locator("#durable-last", { hasText: "32" }).waitFor({ timeout: 10000 });
      await page.locator("#durable-gap", { hasText: "31" }).waitFor({ timeout: 10000 });
      await waitFor("the acked counter", async () => (await page.locator("#durable-acked").textContent()) === "2");
      expect("replayed and live counters",
        [await page.locator("#durable-replayed").textContent(), await page.locator("#durable-live").textContent()],
        ["1", "1"]);
      if (!server.conns[0].params.get("resume")) fail("the console did not ask for the replay");
      await page.click("#disconnect");
    } finally {
      await server.close();
    }
  },
};

const name = process.argv[2];
if (!cases[name]) fail(`unknown case ${name}; cases: ${Object.keys(cases).join(", ")}`);
const browser = await launch();
try {
  const { page, pageErrors } = await openClientPage(browser, pageUrl);
  await cases[name](page);
  if (pageErrors.length) fail(`page errors: ${pageErrors.join("; ")}`);
  console.log(`durable test ${name}: all expectations met`);
} finally {
  await browser.close();
}
