// Issue 14 in the browser: pushgate keeps history, offsets and epochs in
// `--data-dir`, so a server killed with SIGKILL (or stopped cleanly) and
// restarted on the same directory costs the demo page nothing. Its chat shows every message once,
// in order, with no reset line; every transport's clock goes on in the same
// epoch with no offset skipped or repeated; and clients created after the
// restart from cursors saved before it get exactly what they missed, on
// every transport. The same restart of an in-memory server shows the reset,
// as documented.

import { test, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startServer, launch, clientPage, publish, until } from "./harness.mjs";

const TRANSPORTS = ["websocket", "sse", "stream", "longpoll", "poll", "iframe"];

let server, browser;
// Every server started and every data directory made, so that a failed test
// leaves nothing running (a leaked server would keep the runner waiting).
const servers = [];
const dirs = [];
after(async () => {
  await browser?.close();
  for (const s of servers) await s.stop();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

async function start(options) {
  const s = await startServer(options);
  servers.push(s);
  return s;
}

/**
 * Runs in the demo page before its script: records every value each clock
 * card's `data-offset` takes, in `window.clockOffsets[transport]`. A
 * MutationObserver with old values, so two messages handled in one task
 * (a poll answer with two ticks) are both seen.
 */
function recordClockOffsets() {
  window.clockOffsets = {};
  new MutationObserver((records) => {
    const olds = new Map(); // card → the old value of each of its records, in order
    for (const r of records) {
      if (!olds.has(r.target)) olds.set(r.target, []);
      olds.get(r.target).push(r.oldValue);
    }
    for (const [card, values] of olds) {
      // Record i's new value is record i+1's old value; the last one's is on the card.
      const news = [...values.slice(1), card.dataset.offset];
      (window.clockOffsets[card.dataset.transport] ??= []).push(...news.map(Number));
    }
  }).observe(document, { subtree: true, attributes: true, attributeFilter: ["data-offset"], attributeOldValue: true });
}

/** The demo page with every clock live and the chat connected. */
async function openDemo(url) {
  const page = await browser.newPage();
  page.on("pageerror", (e) => console.error("page error:", e));
  await page.addInitScript(recordClockOffsets);
  await page.goto(url + "/");
  await until(page, (ts) => ts.every((t) => {
    const card = document.querySelector(`.clock[data-transport="${t}"]`);
    return card && card.dataset.offset && card.querySelector(".state").classList.contains("connected");
  }), TRANSPORTS, 20_000);
  await until(page, () => window.pushgateChat?.state === "connected");
  await page.fill("#nick", "alice");
  return page;
}

/** Every clock card: transport, epoch, offset, resets, and whether it says connected. */
function cards(page) {
  return page.$$eval(".clock", (els) => els.map((c) => ({
    transport: c.dataset.transport,
    epoch: c.dataset.epoch,
    offset: Number(c.dataset.offset),
    resets: Number(c.dataset.resets),
    connected: c.querySelector(".state").classList.contains("connected"),
  })));
}

/** The demo chat's lines: class, nick and text. */
function chatLines(page) {
  return page.$$eval("#log li", (lis) => lis.map((li) => ({
    cls: li.className,
    nick: li.querySelector(".nick")?.textContent ?? "",
    text: li.lastChild?.textContent ?? "",
  })));
}

/** Resolves once the demo chat shows a (non-pending) line with `text`. */
function shown(page, text) {
  return until(page, (text) => [...document.querySelectorAll("#log li:not(.pending)")].some((li) => li.lastChild?.textContent === text), text);
}

async function sendFromDemo(page, text) {
  await page.fill("#text", text);
  await page.click("#send button");
}

async function history(url, channel) {
  const res = await fetch(`${url}/api/history?channel=${channel}&limit=1000`);
  assert.equal(res.status, 200, `history of ${channel}`);
  return (await res.json()).messages;
}

/**
 * In `page` (a client page), one client per transport subscribed to
 * `channel`, each from `cursors[transport]` when given (else live),
 * recording into `window.r[transport]`; resolves once each is subscribed.
 */
async function openClients(page, channel, cursors = {}) {
  await page.evaluate(({ channel, transports, cursors }) => {
    const { Pushgate } = window.pushgateModule;
    window.r = {};
    for (const t of transports) {
      const rec = (window.r[t] = { received: [], resets: [] });
      const pg = (rec.pg = new Pushgate("", {
        transports: [t], rememberTransport: false, upgradeInterval: 0,
        minDelay: 100, maxDelay: 500, pollInterval: 300, cursor: cursors[t],
      }));
      pg.on("reset", (e) => { rec.resets.push(e); rec.received.push({ reset: true }); });
      pg.subscribe(channel, (m) => rec.received.push({ epoch: m.epoch, offset: m.offset, data: m.data }));
    }
  }, { channel, transports: TRANSPORTS, cursors });
  const tag = btoa(channel).replace(/=+$/, "");
  await until(page, ({ ts, tag }) => ts.every((t) => window.r[t].pg.state === "connected" && window.r[t].pg.cursor().includes(tag)), { ts: TRANSPORTS, tag });
}

/** Resolves with every client's received list once each has at least `n`. */
function clientsReceived(page, n) {
  return until(page, ({ ts, n }) => ts.every((t) => window.r[t].received.length >= n)
    && Object.fromEntries(ts.map((t) => [t, window.r[t].received])), { ts: TRANSPORTS, n });
}

/**
 * The demo page (and a page of clients that leave with saved cursors) on a
 * server with `--data-dir`; the server is stopped with `signal` and started
 * again on the same port and directory; nothing is lost, repeated or reset.
 */
async function restartUnderDemo(ctx, signal) {
  const dir = mkdtempSync(join(tmpdir(), "pushgate-browser-durable-"));
  dirs.push(dir);
  server = await start({ args: ["--data-dir", dir] });
  const port = server.port;
  browser ??= await launch();

  const demo = await openDemo(server.url);
  // A second page whose clients will leave before the crash with a saved cursor.
  const resumer = await clientPage(browser, server.url);
  await openClients(resumer, "chat");

  // Before: two chat lines every client sees, then the resumers save their
  // cursors and close, then a third line only the demo page sees live.
  for (const text of ["before 1", "before 2"]) {
    await sendFromDemo(demo, text);
    await shown(demo, text);
  }
  await clientsReceived(resumer, 2);
  const saved = await resumer.evaluate((ts) => Object.fromEntries(ts.map((t) => {
    const cursor = window.r[t].pg.cursor();
    window.r[t].pg.close();
    return [t, cursor];
  })), TRANSPORTS);
  await sendFromDemo(demo, "before 3");
  await shown(demo, "before 3");
  const [chatBefore] = await history(server.url, "chat");
  const epoch = chatBefore.epoch;

  // The crash (or the clean stop).
  await server.stop(signal);
  const frozen = await cards(demo);
  const clockEpoch = frozen[0].epoch;
  assert.ok(frozen.every((c) => c.epoch === clockEpoch && c.resets === 0), `clocks before the crash: ${JSON.stringify(frozen)}`);
  const highest = Math.max(...frozen.map((c) => c.offset));
  // Every client of the demo page notices the server is gone...
  await until(demo, () => window.pushgateChat.state !== "connected"
    && [...document.querySelectorAll(".clock .state")].every((s) => !s.classList.contains("connected")));
  // ...and a line typed now waits in the offline queue, shown as pending.
  await sendFromDemo(demo, "during the outage");
  await until(demo, () => document.querySelector("#log li.pending") !== null);

  // The restart, on the same port and directory; publishes at once, most
  // likely before the demo page has reconnected (its backoff starts at 1 s).
  server = await start({ port, args: ["--data-dir", dir] });
  const acks = [];
  for (const text of ["after 1", "after 2", "after 3"]) acks.push(await publish(server.url, "chat", { nick: "api", text }));
  const demoConnected = await demo.evaluate(() => window.pushgateChat.state === "connected");
  ctx.diagnostic(`demo chat connected when the API published: ${demoConnected}`);
  assert.ok(acks.every((a) => a.epoch === epoch), `the chat keeps its epoch ${epoch}: ${JSON.stringify(acks)}`);

  // The server's history: every line once, in one epoch, offsets 1..7.
  await shown(demo, "during the outage");
  const kept = await history(server.url, "chat");
  assert.deepEqual(kept.map((m) => m.offset), [1, 2, 3, 4, 5, 6, 7], "offsets in history");
  assert.ok(kept.every((m) => m.epoch === epoch), "one epoch in history");
  const texts = kept.map((m) => m.data.text);
  assert.deepEqual(texts.slice(0, 3), ["before 1", "before 2", "before 3"]);
  assert.deepEqual(texts.filter((t) => t.startsWith("after")), ["after 1", "after 2", "after 3"]);
  assert.equal(texts.filter((t) => t === "during the outage").length, 1, `the queued line is published once: ${texts}`);

  // The demo chat: exactly the history, in its order, nothing pending, no reset line.
  await until(demo, (n) => document.querySelectorAll("#log li").length >= n && !document.querySelector("#log li.pending"), kept.length);
  assert.deepEqual(await chatLines(demo), kept.map((m) => ({ cls: "", nick: m.data.nick, text: m.data.text })), "the demo chat shows each message once, in order, and no reset line");

  // Clients created from the cursors saved before the crash, one per
  // transport: exactly what they missed (offsets 3..7), no reset.
  await openClients(resumer, "chat", saved);
  const missed = kept.slice(2).map((m) => ({ epoch: m.epoch, offset: m.offset, data: m.data }));
  const got = await clientsReceived(resumer, missed.length);
  for (const t of TRANSPORTS) assert.deepEqual(got[t], missed, `${t} resumed from its saved cursor`);

  // Every clock: connected again, two ticks past the highest before the
  // crash, same epoch, no reset, and every offset exactly once, in order.
  await until(demo, ({ ts, highest }) => ts.every((t) => {
    const card = document.querySelector(`.clock[data-transport="${t}"]`);
    return card.querySelector(".state").classList.contains("connected") && Number(card.dataset.offset) >= highest + 2;
  }), { ts: TRANSPORTS, highest }, 20_000);
  for (const c of await cards(demo)) {
    assert.equal(c.epoch, clockEpoch, `${c.transport}: the clock keeps its epoch`);
    assert.equal(c.resets, 0, `${c.transport}: no reset`);
  }
  const offsets = await demo.evaluate(() => window.clockOffsets);
  for (const t of TRANSPORTS) {
    const seen = offsets[t];
    const expected = Array.from({ length: seen.length }, (_, i) => seen[0] + i);
    assert.deepEqual(seen, expected, `${t}: every clock offset once, in order, across the restart`);
  }
  assert.equal((await history(server.url, "clock")).at(-1).epoch, clockEpoch, "the server's clock keeps its epoch");

  await demo.close();
  await resumer.close();
  await server.stop();
}

test("durable: SIGKILL and restart under the demo page — the chat and every clock go on, no reset", (ctx) => restartUnderDemo(ctx, "SIGKILL"));

// A clean stop (streams ended with `end`, WebSockets closed with 1012, the
// store marked clean) must cost the page nothing either.
test("durable: clean stop (SIGTERM) and restart under the demo page — the same, no reset", (ctx) => restartUnderDemo(ctx, "SIGTERM"));

test("in memory: the same restart under the demo page shows a reset", async () => {
  server = await start();
  const port = server.port;
  browser ??= await launch();
  const demo = await openDemo(server.url);
  await sendFromDemo(demo, "before");
  await shown(demo, "before");
  const [{ epoch: clockEpoch }] = await cards(demo);

  await server.stop("SIGKILL");
  await until(demo, () => window.pushgateChat.state !== "connected");
  server = await start({ port });
  const ack = await publish(server.url, "chat", { nick: "api", text: "after" });
  await until(demo, () => document.querySelector("#log li.reset") !== null);
  // Every clock notices its epoch is gone: a reset, then the new epoch.
  await until(demo, ({ ts, clockEpoch }) => ts.every((t) => {
    const card = document.querySelector(`.clock[data-transport="${t}"]`);
    return Number(card.dataset.resets) >= 1 && card.dataset.epoch !== clockEpoch
      && card.querySelector(".state").classList.contains("connected");
  }), { ts: TRANSPORTS, clockEpoch }, 20_000);
  assert.equal(ack.offset, 1, "the in-memory chat starts over");
  await demo.close();
});
