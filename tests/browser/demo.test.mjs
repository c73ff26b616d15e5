// The demo at `/`: every transport's clock ticks, the chat works between two
// pages, shows recent history on load and loses nothing when its connection
// drops; every demo page links to the others and fits a phone. Screenshots
// are kept as artifacts.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { startServer, launch, publish, ARTIFACTS } from "./harness.mjs";

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

/** The texts of the chat's lines, in order. */
const chatLines = (page) => page.$$eval("#log li", (els) => els.map((li) => ({ cls: li.className, text: li.textContent })));

test("demo: the chat shows recent history on load, then goes on live", async () => {
  const sent = ["history one", "history two", "history three"];
  for (const text of sent) await publish(server.url, "chat", { nick: "earlier", text });
  const page = await browser.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  page.on("console", (m) => m.type() === "error" && errors.push(m.text()));
  await page.goto(server.url + "/");
  await page.waitForFunction(() => window.pushgateChat?.state === "connected");
  await page.waitForFunction((last) => [...document.querySelectorAll("#log li.history")].some((li) => li.textContent.includes(last)), sent.at(-1));
  const shown = (await chatLines(page)).filter((l) => l.cls === "history").map((l) => l.text);
  const mine = shown.filter((t) => sent.some((s) => t.endsWith(s)));
  assert.deepEqual(mine, sent.map((s) => "earlier" + s), "the history, in order, once each");
  // The client resumes just after the history: the next message comes once.
  await publish(server.url, "chat", { nick: "later", text: "live after history" });
  await page.waitForFunction(() => [...document.querySelectorAll("#log li")].some((li) => li.textContent.includes("live after history")));
  const lines = await chatLines(page);
  assert.equal(lines.filter((l) => l.text.includes("live after history")).length, 1);
  assert.equal(lines.filter((l) => l.text.endsWith("history three")).length, 1, "no repeat of the history");
  assert.deepEqual(errors, []);
  await page.close();
});

test("demo: dropping the connection for 5 s loses nothing", async () => {
  const page = await browser.newPage();
  await page.goto(server.url + "/");
  await page.waitForFunction(() => window.pushgateChat?.state === "connected" && Number(document.getElementById("tally").dataset.received) > 0);
  await page.click("#drop");
  await page.waitForFunction(() => document.body.dataset.dropped === "true" && window.pushgateChat.state === "disconnected");
  // Published while the page is away: it must get each once, in order.
  const away = ["while away 1", "while away 2", "while away 3"];
  for (const text of away) await publish(server.url, "chat", { nick: "other", text });
  await page.waitForFunction(() => document.querySelector("#log li.resumed"), null, { timeout: 20_000 });
  const lines = await chatLines(page);
  const got = lines.filter((l) => l.text.includes("while away")).map((l) => l.text);
  assert.deepEqual(got, away.map((t) => "other" + t));
  const tally = await page.$eval("#tally", (el) => ({ ...el.dataset, text: el.textContent }));
  assert.equal(tally.gaps, "0", tally.text);
  assert.match(tally.text, /clock: \d+ received/);
  const resumed = lines.find((l) => l.cls.includes("resumed")).text;
  assert.match(resumed, /none lost, none twice/);
  // About 5 clock ticks were published while away, and arrived on resume.
  const n = Number(resumed.match(/(\d+) messages received since the drop/)[1]);
  assert.ok(n >= away.length + 3, resumed);
  assert.equal(await page.isEnabled("#drop"), true);
  await page.close();
});

test("demo: every demo page links to the others", async () => {
  const page = await browser.newPage();
  for (const path of ["/", "/demo/webrtc"]) {
    await page.goto(server.url + path);
    const links = await page.$$eval("nav.pages a", (as) => as.map((a) => ({ href: a.getAttribute("href"), hidden: a.hidden })));
    assert.deepEqual(links.map((l) => l.href), ["/", "/demo/webrtc", "/admin"], path);
    // /admin is off on this server: its link is hidden.
    assert.equal(await page.isVisible("#admin-link"), false, path);
    assert.equal(await page.getAttribute("nav.pages a[aria-current]", "href"), path);
  }
  await page.close();
});

test("demo: the pages fit a phone's screen (375×667), nothing wider", async () => {
  const page = await browser.newPage({ viewport: { width: 375, height: 667 }, isMobile: true, hasTouch: true });
  mkdirSync(ARTIFACTS, { recursive: true });
  for (const [path, shot] of [["/", "demo-phone.png"], ["/demo/webrtc", "webrtc-phone.png"]]) {
    await page.goto(server.url + path, { waitUntil: "load" });
    if (path === "/") {
      // Every part shown: the clocks started, the chat and its history in.
      await page.waitForFunction(() => document.querySelectorAll(".clock[data-offset]").length === 6 && window.pushgateChat?.state === "connected");
    }
    const wide = await page.evaluate(() => {
      const width = document.documentElement.clientWidth;
      const over = [...document.querySelectorAll("body *")]
        .filter((el) => el.getClientRects().length && el.getBoundingClientRect().right > width + 0.5)
        .map((el) => `${el.tagName.toLowerCase()}${el.id ? "#" + el.id : ""}${el.className ? "." + el.className : ""}`);
      return { scroll: document.documentElement.scrollWidth, width, over };
    });
    assert.ok(wide.scroll <= wide.width, `${path}: the page scrolls sideways (${wide.scroll} > ${wide.width}): ${wide.over}`);
    assert.deepEqual(wide.over, [], `${path}: wider than the screen`);
    await page.screenshot({ path: join(ARTIFACTS, shot), fullPage: true });
  }
  await page.close();
});
