// pg.rtc in a real Chromium against the real server (issue 13): pages join a
// room, connect peer to peer over loopback ICE, and talk on the data channel
// while pushgate delivers nothing; leave, mesh, SSE next to WebSocket, fake
// media, and the demo at /demo/webrtc.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { startServer, launch, clientPage, until, ARTIFACTS } from "./harness.mjs";

// Loopback host candidates (no mDNS names), and a fake camera and microphone
// that need no permission prompt.
const WEBRTC_FLAGS = [
  "--allow-loopback-in-peer-connection",
  "--disable-features=WebRtcHideLocalIpsWithMdns",
  "--use-fake-device-for-media-stream",
  "--use-fake-ui-for-media-stream",
];

/**
 * Counts the signals a page sends and receives, on every transport, by
 * watching the wire (WebSocket frames, POST /command bodies, SSE `signal`
 * events): with the server's relayed count, it tells when signaling is done.
 * On WebSocket, `holdSignals()` keeps incoming signals back until
 * `releaseSignals()`, to make two offers cross for sure.
 */
const WIRE_TAP = () => {
  const counts = (window.signalCount = { sent: 0, received: 0 });
  const isSignal = (text) => typeof text === "string" && text.startsWith('{"type":"signal"');
  let held = null;
  window.holdSignals = () => (held = []);
  window.releaseSignals = () => {
    const frames = held || [];
    held = null;
    for (const deliver of frames) deliver();
  };
  const Ws = window.WebSocket;
  window.WebSocket = class extends Ws {
    constructor(...args) {
      super(...args);
      this.addEventListener("message", (e) => isSignal(e.data) && counts.received++);
    }
    send(data) {
      if (isSignal(data)) counts.sent++;
      return super.send(data);
    }
    get onmessage() {
      return super.onmessage;
    }
    set onmessage(fn) {
      super.onmessage = fn && ((e) => (held && isSignal(e.data) ? held.push(() => fn.call(this, e)) : fn.call(this, e)));
    }
  };
  const Es = window.EventSource;
  window.EventSource = class extends Es {
    constructor(...args) {
      super(...args);
      this.addEventListener("signal", () => counts.received++);
    }
  };
  const fetch = window.fetch;
  window.fetch = function (url, init) {
    if (init && isSignal(init.body)) counts.sent++;
    return fetch.apply(this, arguments);
  };
};

let server, browser;
before(async () => {
  server = await startServer();
  browser = await launch(WEBRTC_FLAGS);
});
after(async () => {
  await browser?.close();
  await server?.stop();
});

/** A page on the server's origin, failing the test on any page error or console error. */
async function newPage() {
  const page = await clientPage(browser, server.url, { init: WIRE_TAP });
  page.consoleErrors = [];
  page.on("console", (m) => m.type() === "error" && page.consoleErrors.push(m.text()));
  page.on("pageerror", (e) => page.consoleErrors.push(String(e)));
  return page;
}

/**
 * Joins `room` in the page as `window.room`, recording its events in
 * `window.rtc`; resolves with the page's client id.
 */
function joinRoom(page, room, { transports, media = false } = {}) {
  return page.evaluate(
    async ({ room, transports, media }) => {
      const { Pushgate } = window.pushgateModule;
      const pg = (window.pg = new Pushgate("", { rememberTransport: false, upgradeInterval: 0, ...(transports ? { transports } : {}) }));
      const r = await pg.rtc.join(room, { media });
      window.room = r;
      const rtc = (window.rtc = { peers: [...r.peers.keys()], open: [], messages: [], left: [], streams: [], errors: [] });
      r.on("peer", (p) => rtc.peers.push(p.id));
      r.on("open", (p) => rtc.open.push(p.id));
      r.on("message", ({ peer, data }) => rtc.messages.push({ from: peer.id, data }));
      r.on("leave", (p) => rtc.left.push({ id: p.id, reason: p.closeReason, pcState: p.pc.signalingState }));
      r.on("stream", ({ peer, stream }) => rtc.streams.push({ from: peer.id, id: stream.id }));
      r.on("error", (e) => rtc.errors.push(`${e.code}: ${e.message}`));
      // `open` may have fired before these listeners for the members already
      // there; the channel's own state is the truth.
      for (const p of r.peers.values()) if (p.channel.readyState === "open") rtc.open.push(p.id);
      return { client: r.client, transport: pg.transport };
    },
    { room, transports, media },
  );
}

/** Resolves once the page's data channel to every one of `ids` is open. */
function openTo(page, ids) {
  return until(page, (ids) => ids.every((id) => window.room.peers.get(id)?.channel?.readyState === "open"), ids);
}

/** The page's side of signaling is done: every connection stable, connected, candidates gathered. */
function settledHere(page) {
  return until(page, () =>
    [...window.room.peers.values()].every(
      (p) => p.pc.signalingState === "stable" && p.pc.connectionState === "connected" && p.pc.iceGatheringState === "complete",
    ),
  );
}

/** One counter of /metrics, summed over its labels. */
async function metric(name) {
  const text = await (await fetch(`${server.url}/metrics`)).text();
  let sum = 0;
  let seen = false;
  for (const line of text.split("\n")) {
    if (line.startsWith(`${name}{`) || line.startsWith(`${name} `)) {
      sum += Number(line.slice(line.lastIndexOf(" ") + 1));
      seen = true;
    }
  }
  assert.ok(seen, `/metrics has ${name}`);
  return sum;
}

/** The server's signal counters, to take differences from. */
async function signalCounters() {
  return { relayed: await metric("pushgate_signals_relayed_total"), refused: await metric("pushgate_signal_errors_total") };
}

/**
 * Waits until no signal is on its way: every page settled, and every signal
 * the pages sent since `base` (signalCounters() before they joined) was
 * relayed (or refused) by the server and received.
 */
async function signalingSettled(pages, base) {
  for (const p of pages) await settledHere(p);
  const deadline = Date.now() + 15_000;
  for (;;) {
    const counts = await Promise.all(pages.map((p) => p.evaluate(() => window.signalCount)));
    const sent = counts.reduce((n, c) => n + c.sent, 0);
    const received = counts.reduce((n, c) => n + c.received, 0);
    const now = await signalCounters();
    const relayed = now.relayed - base.relayed;
    const refused = now.refused - base.refused;
    if (sent === relayed + refused && received === relayed) return;
    if (Date.now() > deadline) throw new Error(`signaling did not settle: sent ${sent}, relayed ${relayed}, refused ${refused}, received ${received}`);
    await pages[0].waitForTimeout(50); // polling the server's counters: no event to await
  }
}

async function closeAll(pages) {
  for (const p of pages) if (!p.isClosed()) await p.close();
}

test("two pages join a room: the data channel opens, a message goes each way, and pushgate delivers nothing meanwhile; then one leaves", async () => {
  const [a, b] = [await newPage(), await newPage()];
  try {
    const base = await signalCounters();
    const ja = await joinRoom(a, "room:pair");
    const jb = await joinRoom(b, "room:pair");
    assert.equal(ja.transport, "websocket");
    assert.deepEqual(await b.evaluate(() => window.rtc.peers), [ja.client], "b starts with a, from the member list");
    await until(a, (id) => window.rtc.peers.includes(id), jb.client);
    await openTo(a, [jb.client]);
    await openTo(b, [ja.client]);

    await signalingSettled([a, b], base);
    const delivered = await metric("pushgate_messages_delivered_total");
    const relayed = await metric("pushgate_signals_relayed_total");
    const published = await metric("pushgate_messages_published_total");
    assert.equal(await a.evaluate(() => window.room.send("hello from a")), 1);
    assert.equal(await b.evaluate((id) => window.room.peers.get(id).send("hello from b"), ja.client), true);
    const atB = await until(b, () => window.rtc.messages.length >= 1 && window.rtc.messages);
    const atA = await until(a, () => window.rtc.messages.length >= 1 && window.rtc.messages);
    assert.deepEqual(atB, [{ from: ja.client, data: "hello from a" }]);
    assert.deepEqual(atA, [{ from: jb.client, data: "hello from b" }]);
    assert.equal(await metric("pushgate_messages_delivered_total"), delivered, "pushgate delivered nothing during the exchange");
    assert.equal(await metric("pushgate_signals_relayed_total"), relayed, "nor relayed a signal");
    assert.equal(await metric("pushgate_messages_published_total"), published);

    // b leaves: a sees the leave and closes that peer.
    await b.evaluate(() => window.room.leave());
    const left = await until(a, () => window.rtc.left.length >= 1 && window.rtc.left);
    assert.deepEqual(left, [{ id: jb.client, reason: "left", pcState: "closed" }]);
    assert.equal(await a.evaluate(() => window.room.peers.size), 0);
    for (const p of [a, b]) {
      assert.deepEqual(await p.evaluate(() => window.rtc.errors), []);
      assert.deepEqual(p.consoleErrors, []);
    }
  } finally {
    await closeAll([a, b]);
  }
});

test("a closed tab leaves the room: the others see it go", async () => {
  const [a, b] = [await newPage(), await newPage()];
  try {
    const ja = await joinRoom(a, "room:tab");
    const jb = await joinRoom(b, "room:tab");
    await openTo(b, [ja.client]);
    await b.close();
    const left = await until(a, () => window.rtc.left.length >= 1 && window.rtc.left);
    assert.deepEqual(left.map((l) => [l.id, l.reason]), [[jb.client, "left"]]);
  } finally {
    await closeAll([a, b]);
  }
});

test("a third page joins a room of two: all three pairs connect (mesh)", async () => {
  const pages = [await newPage(), await newPage(), await newPage()];
  try {
    const ids = [];
    for (const p of pages.slice(0, 2)) ids.push((await joinRoom(p, "room:mesh")).client);
    await openTo(pages[0], [ids[1]]);
    ids.push((await joinRoom(pages[2], "room:mesh")).client);
    assert.deepEqual((await pages[2].evaluate(() => window.rtc.peers)).sort(), [ids[0], ids[1]].sort());
    for (const [i, p] of pages.entries()) await openTo(p, ids.filter((_, j) => j !== i));
    await pages[2].evaluate(() => window.room.send("from the third"));
    for (const p of pages.slice(0, 2)) {
      const got = await until(p, () => window.rtc.messages.length >= 1 && window.rtc.messages);
      assert.deepEqual(got, [{ from: ids[2], data: "from the third" }]);
    }
    for (const p of pages) {
      assert.equal(await p.evaluate(() => window.room.peers.size), 2);
      assert.deepEqual(await p.evaluate(() => window.rtc.errors), []);
      assert.deepEqual(p.consoleErrors, []);
    }
  } finally {
    await closeAll(pages);
  }
});

test("SSE next to WebSocket: the SSE page signals by POST /command and receives `signal` events; they connect", async () => {
  const [ws, sse] = [await newPage(), await newPage()];
  try {
    const base = await signalCounters();
    const jw = await joinRoom(ws, "room:mixed", { transports: ["websocket"] });
    const js = await joinRoom(sse, "room:mixed", { transports: ["sse"] });
    assert.equal(js.transport, "sse");
    await openTo(ws, [js.client]);
    await openTo(sse, [jw.client]);
    await signalingSettled([ws, sse], base);
    const counts = await sse.evaluate(() => window.signalCount);
    assert.ok(counts.sent > 0 && counts.received > 0, `the SSE page signaled both ways: ${JSON.stringify(counts)}`);
    await sse.evaluate(() => window.room.send("over sse's data channel"));
    await ws.evaluate(() => window.room.send("over ws's data channel"));
    assert.deepEqual(await until(ws, () => window.rtc.messages.length >= 1 && window.rtc.messages), [{ from: js.client, data: "over sse's data channel" }]);
    assert.deepEqual(await until(sse, () => window.rtc.messages.length >= 1 && window.rtc.messages), [{ from: jw.client, data: "over ws's data channel" }]);
    for (const p of [ws, sse]) {
      assert.deepEqual(await p.evaluate(() => window.rtc.errors), []);
      assert.deepEqual(p.consoleErrors, []);
    }
  } finally {
    await closeAll([ws, sse]);
  }
});

test("fake camera and microphone: each page receives the other's stream, with live audio and video tracks", async () => {
  const [a, b] = [await newPage(), await newPage()];
  try {
    const ja = await joinRoom(a, "room:media", { media: true });
    const jb = await joinRoom(b, "room:media", { media: true });
    for (const [page, from] of [[a, jb.client], [b, ja.client]]) {
      const kinds = await until(
        page,
        (from) => {
          const s = window.room.peers.get(from)?.stream;
          const live = s && s.getTracks().filter((t) => t.readyState === "live");
          return live && live.length === 2 && live.map((t) => t.kind).sort();
        },
        from,
      );
      assert.deepEqual(kinds, ["audio", "video"]);
      assert.ok((await page.evaluate(() => window.rtc.streams.length)) >= 1, "a stream event");
    }
    // The remote video actually plays frames.
    await b.evaluate((from) => {
      const v = document.createElement("video");
      v.muted = true;
      v.autoplay = true;
      v.srcObject = window.room.peers.get(from).stream;
      document.body.append(v);
      window.remoteVideo = v;
    }, ja.client);
    await until(b, () => window.remoteVideo.videoWidth > 0 && window.remoteVideo.currentTime > 0);
    // Leaving stops the tracks the room got from getUserMedia.
    await a.evaluate(() => window.room.leave());
    assert.deepEqual(await a.evaluate(() => window.room.localStream.getTracks().map((t) => t.readyState)), ["ended", "ended"]);
    for (const p of [a, b]) assert.deepEqual(await p.evaluate(() => window.rtc.errors), []);
  } finally {
    await closeAll([a, b]);
  }
});

test("both pages turn on their camera at once: the offers cross, the polite end yields, each gets the other's video", async () => {
  const [a, b] = [await newPage(), await newPage()];
  try {
    const ja = await joinRoom(a, "room:glare");
    const jb = await joinRoom(b, "room:glare");
    await openTo(a, [jb.client]);
    await openTo(b, [ja.client]);
    for (const p of [a, b]) await settledHere(p);
    for (const p of [a, b]) {
      await p.evaluate(async () => {
        // Count the offers made and the offers that met one of ours.
        const pc = [...window.room.peers.values()][0].pc;
        const t = (window.glare = { offers: 0, crossed: 0 });
        const sld = pc.setLocalDescription.bind(pc);
        pc.setLocalDescription = async (d) => {
          await sld(d);
          if (pc.localDescription.type === "offer") t.offers++;
        };
        const srd = pc.setRemoteDescription.bind(pc);
        pc.setRemoteDescription = (d) => {
          if (d.type === "offer" && pc.signalingState === "have-local-offer") t.crossed++;
          return srd(d);
        };
        window.camera = await navigator.mediaDevices.getUserMedia({ video: true });
        window.holdSignals();
      });
    }
    // Each offers its camera while the other's offer is held back: they cross.
    for (const p of [a, b]) await p.evaluate(() => window.room.setMedia(window.camera));
    for (const p of [a, b]) await until(p, () => window.glare.offers === 1 && window.signalCount.sent > 0);
    for (const p of [a, b]) await p.evaluate(() => window.releaseSignals());
    for (const [page, from] of [[a, jb.client], [b, ja.client]]) {
      await until(page, (from) => window.room.peers.get(from)?.stream?.getVideoTracks().some((t) => t.readyState === "live"), from);
    }
    const polite = ja.client < jb.client ? a : b;
    const impolite = polite === a ? b : a;
    for (const p of [a, b]) await settledHere(p);
    // The polite end applied the crossing offer (rolling its own back); the
    // impolite end ignored it and got an answer instead.
    assert.equal((await polite.evaluate(() => window.glare)).crossed, 1, "the polite end took the other's offer");
    assert.equal((await impolite.evaluate(() => window.glare)).crossed, 0, "the impolite end ignored it");
    for (const p of [a, b]) {
      assert.deepEqual(await p.evaluate(() => window.rtc.errors), []);
      assert.deepEqual(p.consoleErrors, []);
    }
    await a.evaluate(() => window.room.send("after the glare"));
    assert.deepEqual(await until(b, () => window.rtc.messages.length >= 1 && window.rtc.messages), [{ from: ja.client, data: "after the glare" }]);
  } finally {
    await closeAll([a, b]);
  }
});

test("a newcomer with neither data channel nor media still connects and receives the member's video", async () => {
  const [sender, viewer] = [await newPage(), await newPage()];
  try {
    const js = await joinRoom(sender, "room:viewer", { media: { video: true } });
    await viewer.evaluate(async () => {
      const { Pushgate } = window.pushgateModule;
      const pg = new Pushgate("", { rememberTransport: false, upgradeInterval: 0 });
      window.room = await pg.rtc.join("room:viewer", { dataChannel: false });
    });
    await until(viewer, (from) => window.room.peers.get(from)?.stream?.getVideoTracks().some((t) => t.readyState === "live"), js.client);
    assert.equal(await viewer.evaluate((from) => window.room.peers.get(from).channel, js.client), null);
    assert.deepEqual(viewer.consoleErrors, []);
  } finally {
    await closeAll([sender, viewer]);
  }
});

test("a poll transport cannot join a room: a clear error", async () => {
  const page = await newPage();
  try {
    const err = await page.evaluate(async () => {
      const { Pushgate } = window.pushgateModule;
      const pg = new Pushgate("", { transports: ["longpoll"], rememberTransport: false });
      try {
        await pg.rtc.join("room:poll");
        return null;
      } catch (e) {
        return { code: e.code, message: e.message };
      } finally {
        pg.close();
      }
    });
    assert.equal(err?.code, "unavailable");
    assert.match(err.message, /held connection/);
  } finally {
    await page.close();
  }
});

test("/demo/webrtc: loads without console errors; two tabs join, see each other, chat over the data channel", async () => {
  const pages = [];
  try {
    const main = await browser.newPage();
    await main.goto(`${server.url}/`);
    assert.equal(await main.getAttribute("#webrtc-link", "href"), "/demo/webrtc", "the main demo links to it");
    await main.close();
    for (let i = 0; i < 2; i++) {
      const page = await browser.newPage({ viewport: { width: 1100, height: 800 } });
      page.consoleErrors = [];
      page.on("console", (m) => m.type() === "error" && page.consoleErrors.push(m.text()));
      page.on("pageerror", (e) => page.consoleErrors.push(String(e)));
      await page.goto(`${server.url}/demo/webrtc`);
      await page.waitForFunction(() => window.pushgateRtcDemo?.ready === true);
      pages.push(page);
    }
    const [a, b] = pages;
    assert.equal(await a.inputValue("#room"), "room:demo");
    await a.fill("#room", "room:demo-test");
    await b.fill("#room", "room:demo-test");
    await a.click("#join");
    await a.waitForFunction(() => window.pushgateRtcDemo.room?.client);
    await b.click("#join");
    await b.waitForFunction(() => window.pushgateRtcDemo.room?.client);
    const ida = await a.evaluate(() => window.pushgateRtcDemo.room.client);
    const idb = await b.evaluate(() => window.pushgateRtcDemo.room.client);
    // Each lists the other as a member, and the chat opens.
    await a.waitForSelector(`#members li[data-client="${idb}"].open`);
    await b.waitForSelector(`#members li[data-client="${ida}"].open`);
    await a.fill("#text", "hi <b>b</b>, peer to peer");
    await a.click("#chat button");
    await b.waitForFunction(() => [...document.querySelectorAll("#log li")].some((li) => li.textContent.includes("hi <b>b</b>, peer to peer")));
    const line = await b.$eval("#log li.msg:last-child", (li) => ({ text: li.textContent, html: li.innerHTML }));
    assert.match(line.text, new RegExp(ida));
    assert.ok(!line.html.includes("<b>b</b>"), "text is shown as text, not markup");
    assert.match(await a.textContent("body"), /never sees/, "the page says the server never sees the chat");
    mkdirSync(ARTIFACTS, { recursive: true });
    await b.screenshot({ path: join(ARTIFACTS, "demo-webrtc.png"), fullPage: true });

    // a leaves: b sees it go.
    await a.click("#leave");
    await b.waitForSelector(`#members li[data-client="${ida}"]`, { state: "detached" });
    for (const p of pages) assert.deepEqual(p.consoleErrors, []);
  } finally {
    await closeAll(pages);
  }
});

test("/demo/webrtc: camera and microphone show local and remote video", async () => {
  const pages = [];
  try {
    for (let i = 0; i < 2; i++) {
      const page = await browser.newPage();
      page.consoleErrors = [];
      page.on("console", (m) => m.type() === "error" && page.consoleErrors.push(m.text()));
      page.on("pageerror", (e) => page.consoleErrors.push(String(e)));
      await page.goto(`${server.url}/demo/webrtc`);
      await page.waitForFunction(() => window.pushgateRtcDemo?.ready === true);
      await page.fill("#room", "room:demo-video");
      await page.click("#join");
      await page.waitForFunction(() => window.pushgateRtcDemo.room?.client);
      pages.push(page);
    }
    const [a, b] = pages;
    const ida = await a.evaluate(() => window.pushgateRtcDemo.room.client);
    await a.click("#camera");
    await a.waitForFunction(() => document.querySelector("#local").videoWidth > 0);
    await b.waitForFunction((id) => {
      const v = document.querySelector(`video[data-client="${id}"]`);
      return v && v.videoWidth > 0;
    }, ida);
    for (const p of pages) assert.deepEqual(p.consoleErrors, []);
  } finally {
    await closeAll(pages);
  }
});
