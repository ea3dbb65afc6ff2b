// Drives the browser console in a real headless Chromium (Debian's, via
// playwright-core). Run by tests/browser.rs with the gateway's addresses in
// the environment; exits non-zero on the first failed expectation.
import { chromium } from "playwright-core";

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set (run this through cargo test --test browser)`);
  return value;
};
const [page_url, api, apiKey, token, user, screenshot] =
  ["PG_PAGE", "PG_API", "PG_API_KEY", "PG_TOKEN", "PG_USER", "PG_SCREENSHOT"].map(env);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const pageErrors = [];
try {
  const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
  page.on("pageerror", (e) => pageErrors.push(e.message));
  await page.goto(page_url);
  const logHas = (text) => page.locator("#log li", { hasText: text }).first().waitFor({ timeout: 10000 });

  // Not a dev-secret gateway: the dev token form stays hidden.
  if (await page.locator("#dev").isVisible()) throw new Error("dev token form shown without the dev secret");

  await page.fill("#token", token);
  await page.click("#connect");
  await page.locator("#state", { hasText: "open" }).waitFor({ timeout: 10000 });
  await logHas("1 HELLO");

  await page.fill("#action", "111");
  await page.fill("#payload", "{}");
  await page.click("#send");
  await logHas(`111 FETCH_INFO {"user":"${user}"`);
  const reply = await page.locator("#log li", { hasText: "111 FETCH_INFO" }).first().textContent();
  if (!reply.includes('"seq":1')) throw new Error(`reply not matched by seq: ${reply}`);

  const response = await fetch(`${api}/v1/push`, {
    method: "POST",
    headers: { authorization: `Bearer ${apiKey}`, "content-type": "application/json" },
    body: JSON.stringify({ users: [user], payload: { msg: "hello from the API" } }),
  });
  const answer = await response.json();
  if (answer.delivered !== 1) throw new Error(`push not delivered: ${JSON.stringify(answer)}`);
  await logHas('200 PUSH {"msg":"hello from the API"}');

  await page.screenshot({ path: screenshot, fullPage: true });
  await page.click("#disconnect");
  await page.locator("#state", { hasText: "closed" }).waitFor({ timeout: 10000 });
  if (pageErrors.length) throw new Error(`page errors: ${pageErrors.join("; ")}`);
  console.log("console test: all expectations met");
} finally {
  await browser.close();
}
