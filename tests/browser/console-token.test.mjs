// The console with a token the gateway stops accepting, in a real headless
// Chromium against the real gateway (run by tests/browser.rs):
//   node console-token.test.mjs expired-in-session   (close 4003 mid-session)
//   node console-token.test.mjs refused               (401 on every upgrade)
// The console must say what happened and stop, not retry the same token
// forever. Exits non-zero on the first failed expectation.
import { env, fail, launch, mint, sleep } from "./harness.mjs";

const pageUrl = env("PG_PAGE");
const secret = env("PG_SECRET");
const name = process.argv[2];
const ttl = { "expired-in-session": 2, refused: -60 }[name];
if (ttl === undefined) fail(`unknown case ${name}`);

const browser = await launch();
try {
  const page = await browser.newPage();
  const pageErrors = [];
  page.on("pageerror", (e) => pageErrors.push(e.message));
  await page.goto(pageUrl);
  const logLines = () => page.locator("#log li").allTextContents();

  await page.fill("#token", await mint(secret, "kate", ttl));
  await page.click("#connect");
  if (name === "expired-in-session") {
    await page.locator("#log li", { hasText: "1 HELLO" }).first().waitFor({ timeout: 10000 });
    await page.locator("#log li", { hasText: "4003" }).first().waitFor({ timeout: 10000 });
  }
  try {
    await page.locator("#state", { hasText: "closed" }).waitFor({ timeout: 15000 });
  } catch (_) {
    fail(`console never stopped; state ${await page.textContent("#state")}; log:\n${(await logLines()).join("\n")}`);
  }
  const message = name === "expired-in-session" ? /token expired/i : /refused/i;
  const lines = await logLines();
  if (!lines.some((l) => message.test(l) && /token/i.test(l))) {
    fail(`no clear message matching ${message} in the log:\n${lines.join("\n")}`);
  }
  // Stopped for good: nothing more happens.
  await sleep(2000);
  const later = await logLines();
  if (later.length !== lines.length) fail(`the console kept going after it stopped:\n${later.join("\n")}`);
  if ((await page.textContent("#state")) !== "closed") fail("state left closed");
  if (!(await page.isEnabled("#connect"))) fail("Connect is disabled after the console stopped");
  if (pageErrors.length) fail(`page errors: ${pageErrors.join("; ")}`);
  console.log(`console token test ${name}: all expectations met\n${later.join("\n")}`);
} finally {
  await browser.close();
}
