// The demo at `/`: every transport's clock ticks, the chat works between two
// pages, and a screenshot is kept as an artifact.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { startServer, launch, ARTIFACTS } from "./harness.mjs";

let server, browser;
before(async () => { server = await startServer(); browser = await launch(); });
after(async () => { await browser?.close(); await server?.stop(); });

test("demo: one live clock per transport", async () => {
  const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
  await page.goto(server.url + "/");
  const transports = ["websocket", "sse", "stream", "longpoll", "poll", "iframe"];
  for (const t of transports) {
    // A clock counts as live once it has shown a time and says connected.
    await page.waitForFunction((t) => {
      const card = document.querySelector(`.clock[data-transport="${t}"]`);
      return card && card.dataset.offset && card.querySelector(".state").classList.contains("connected");
    }, t, { timeout: 20_000 });
  }
  const times = await page.$$eval(".clock .time", (els) => els.map((e) => e.textContent));
  assert.equal(times.length, transports.length);
  assert.ok(times.every((t) => t !== "--:--:--"), `every clock shows a time: ${times}`);
  mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: join(ARTIFACTS, "demo.png"), fullPage: true });
  await page.close();
});

test("demo: chat between two pages", async () => {
  const alice = await browser.newPage();
  const bob = await browser.newPage();
  for (const p of [alice, bob]) {
    await p.goto(server.url + "/");
    await p.waitForFunction(() => window.pushgateChat?.state === "connected");
  }
  await alice.fill("#nick", "alice");
  await alice.fill("#text", "hello <b>bob</b>");
  await alice.click("#send button");
  await bob.waitForFunction(() => [...document.querySelectorAll("#log li")].some((li) => li.textContent.includes("hello <b>bob</b>")));
  const line = await bob.$eval("#log li:last-child", (li) => ({ nick: li.querySelector(".nick").textContent, html: li.innerHTML }));
  assert.equal(line.nick, "alice");
  assert.ok(!line.html.includes("<b>bob</b>"), "text is shown as text, not markup");
  await alice.close();
  await bob.close();
});
