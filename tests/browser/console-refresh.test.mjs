// The console and tokens during a session, in a real headless Chromium
// against the real gateway (run by tests/browser.rs):
//   node console-refresh.test.mjs dev-token   (development secret: TOKEN_EXPIRING
//                                               shown, refreshed with a fresh dev
//                                               token, reply logged; 4006 logged,
//                                               back with a fresh dev token)
//   node console-refresh.test.mjs pasted      (a pasted token: the console says it
//                                               cannot refresh it, "Refresh token"
//                                               sends a newly pasted one; 4006 stops)
// Exits non-zero on the first failed expectation.
import { env, fail, launch, mint, sleep } from "./harness.mjs";

const pageUrl = env("PG_PAGE");
const name = process.argv[2];

async function revoke(user) {
  const response = await fetch(`${env("PG_API")}/v1/users/${user}/revoke`, {
    method: "POST", headers: { authorization: `Bearer ${env("PG_API_KEY")}` },
  });
  if (!response.ok) fail(`revoke: ${response.status} ${await response.text()}`);
}

const cases = {
  async "dev-token"(page, line, lines) {
    await page.locator("#dev").waitFor({ state: "visible", timeout: 10000 });
    await page.fill("#dev-user", "lena");
    await page.click("#dev-token");
    await line("dev token for lena");
    const first = await page.inputValue("#token");
    await page.click("#connect");
    await line("1 HELLO");
    await line("10 TOKEN_EXPIRING");
    await line("refreshing with a fresh dev token");
    await line("<- 9 TOKEN_REFRESH");
    await line("token refreshed: the session now expires at");
    const all = await lines();
    const sent = all.find((l) => l.includes("-> 9 TOKEN_REFRESH"));
    if (!sent || !/"token":"[^"]{1,16}\.\.\."/.test(sent) || !/"seq":\d+/.test(sent)) fail(`sent line: ${sent}`);
    if (!all.some((l) => /<- 9 TOKEN_REFRESH \{"expires_at":\d+,"seq":\d+\}/.test(l))) fail(`no reply line:\n${all.join("\n")}`);
    if (!/refreshed: expires at/.test(await page.textContent("#token-status"))) fail("token status not updated");
    if ((await page.inputValue("#token")) === first) fail("the token box still holds the first token");

    await revoke("lena");
    await line("closed 4006 REVOKED");
    await line("asking the dev token source for a new one");
    try {
      await page.locator("#log li", { hasText: "1 HELLO" }).nth(1).waitFor({ timeout: 10000 });
    } catch (_) {
      fail(`not back after 4006; log:\n${(await lines()).join("\n")}`);
    }
    if ((await lines()).some((l) => /revoked \(4006\): stopped/.test(l))) fail("stopped although a new dev token came");
    if ((await page.textContent("#state")) !== "open") fail(`state ${await page.textContent("#state")}`);
  },

  async pasted(page, line, lines) {
    const secret = env("PG_SECRET");
    const started = Date.now();
    await page.fill("#token", await mint(secret, "mona", 6));
    await page.click("#connect");
    await line("1 HELLO");
    await line("10 TOKEN_EXPIRING");
    await line("the pasted token cannot be refreshed automatically");
    if ((await lines()).some((l) => l.includes("-> 9"))) fail("a TOKEN_REFRESH was sent for a pasted token");
    await page.fill("#token", await mint(secret, "mona", 3600));
    await page.click("#refresh-token");
    await line("<- 9 TOKEN_REFRESH");
    await line("token refreshed");
    // Past the pasted token's expiry (6 s): still the same session.
    await sleep(Math.max(0, started + 8500 - Date.now()));
    const all = await lines();
    if (all.some((l) => l.includes("closed 4003")) || all.filter((l) => l.includes("1 HELLO")).length !== 1) {
      fail(`the session did not survive its first token:\n${all.join("\n")}`);
    }
    if ((await page.textContent("#state")) !== "open") fail(`state ${await page.textContent("#state")}`);

    await revoke("mona");
    await line("closed 4006 REVOKED");
    await line("revoked (4006): stopped (static_token)");
    await page.locator("#state", { hasText: "closed" }).waitFor({ timeout: 5000 });
    await sleep(1500);
    if ((await lines()).filter((l) => l.includes("1 HELLO")).length !== 1) fail("reconnected after 4006");
  },
};

if (!cases[name]) fail(`unknown case ${name}`);
const browser = await launch();
try {
  const page = await browser.newPage();
  const pageErrors = [];
  page.on("pageerror", (e) => pageErrors.push(e.message));
  await page.goto(pageUrl);
  const lines = () => page.locator("#log li").allTextContents();
  const line = async (text) => {
    try {
      await page.locator("#log li", { hasText: text }).first().waitFor({ timeout: 10000 });
    } catch (_) {
      fail(`no log line with ${JSON.stringify(text)}; log:\n${(await lines()).join("\n")}`);
    }
  };
  await cases[name](page, line, lines);
  if (pageErrors.length) fail(`page errors: ${pageErrors.join("; ")}`);
  console.log(`console refresh test ${name}: all expectations met\n${(await lines()).join("\n")}`);
} finally {
  await browser.close();
}
