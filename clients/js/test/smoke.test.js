// Against a real server: PUSHGATE_URL=http://127.0.0.1:17171 node --experimental-websocket --test test/smoke.test.js
// Skipped without PUSHGATE_URL. Start the server with `pushgate serve --no-demo`;
// /api/publish must accept this machine (loopback, no API key).
//
// Node 20 has fetch (stream, longpoll, poll, /command), WebSocket only behind
// --experimental-websocket, and no EventSource: a small fetch-based one below
// stands in, enough to exercise the SSE transport's event handling.

import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { Pushgate } from "../pushgate.js";
import { waitFor } from "./fake-server.js";

const BASE = process.env.PUSHGATE_URL;
const skip = BASE ? false : "set PUSHGATE_URL to run against a server";

/** EventSource's dispatch rules (named events to their listeners only), over fetch. */
class MiniEventSource {
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this._listeners = new Map();
    this._abort = new AbortController();
    this._run().catch(() => {
      if (this.readyState !== 2) {
        this.readyState = 2;
        this.onerror?.({});
      }
    });
  }
  addEventListener(type, fn) {
    if (!this._listeners.has(type)) this._listeners.set(type, []);
    this._listeners.get(type).push(fn);
  }
  close() {
    this.readyState = 2;
    this._abort.abort();
  }
  async _run() {
    const res = await fetch(this.url, { signal: this._abort.signal, headers: { accept: "text/event-stream" } });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    this.readyState = 1;
    const decoder = new TextDecoder();
    let buf = "";
    let event = { type: "message", data: [] };
    for await (const chunk of res.body) {
      buf += decoder.decode(chunk, { stream: true });
      let nl;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (line === "") {
          // Dispatched when a data field came, even an empty one (`event:ping\ndata:`).
          if (event.data.length) for (const fn of this._listeners.get(event.type || "message") || []) fn({ data: event.data.join("\n") });
          event = { type: "message", data: [] };
        } else if (!line.startsWith(":")) {
          // `field:value`, one optional space after the colon.
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
          if (field === "event") event.type = value;
          else if (field === "data") event.data.push(value);
        }
      }
    }
    throw new Error("stream ended");
  }
}

async function apiPublish(channel, body, { binary = false, event } = {}) {
  const url = binary
    ? `${BASE}/api/publish?channel=${encodeURIComponent(channel)}${event ? `&event=${event}` : ""}`
    : `${BASE}/api/publish`;
  const res = await fetch(url, {
    method: "POST",
    headers: { "content-type": binary ? "application/octet-stream" : "application/json" },
    body: binary ? body : JSON.stringify({ channel, data: body, ...(event ? { event } : {}) }),
  });
  assert.equal(res.status, 200, await res.clone().text());
  return res.json();
}

test("GET /pushgate.js serves this file", { skip }, async () => {
  const res = await fetch(`${BASE}/pushgate.js`);
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("content-type"), "text/javascript; charset=utf-8");
  assert.equal(res.headers.get("cache-control"), "no-cache");
  assert.equal(await res.text(), readFileSync(new URL("../pushgate.js", import.meta.url), "utf8"));
});

const transports = ["websocket", "sse", "stream", "longpoll", "poll"];
for (const transport of transports) {
  const missing = transport === "websocket" && typeof WebSocket !== "function" ? "run node with --experimental-websocket" : false;
  test(`${transport}: subscribe, publish both ways, binary, events, resume`, { skip: skip || missing }, async (t) => {
    const channel = `smoke-${transport}-${Date.now()}`;
    const options = {
      transports: [transport],
      rememberTransport: false,
      pollInterval: 100,
      sseEvents: ["price"],
      EventSource: MiniEventSource,
      WebSocket: globalThis.WebSocket,
    };
    const pg = new Pushgate(BASE, options);
    t.after(() => pg.close());
    const got = [];
    pg.subscribe(channel, (m) => got.push(m));
    await waitFor(() => pg.state === "connected", 5000, "connected");
    assert.equal(pg.transport, transport);
    await waitFor(() => pg.cursor() !== "", 5000, "a position");

    const reply = await pg.publish(channel, { n: 1 });
    assert.equal(reply.type, "published");
    assert.equal(reply.offset, 1);
    await apiPublish(channel, { n: 2 }, { event: "price" });
    await apiPublish(channel, Buffer.from([0, 10, 200]), { binary: true });
    await waitFor(() => got.length === 3, 5000, "3 messages");
    assert.deepEqual(got.map((m) => m.offset), [1, 2, 3]);
    assert.deepEqual(got[0].data, { n: 1 });
    assert.equal(got[1].event, "price");
    assert.equal(got[2].encoding, "binary");
    assert.ok(got[2].data instanceof Uint8Array);
    assert.deepEqual([...got[2].data], [0, 10, 200]);
    await assert.rejects(pg.publish(channel, 1, { event: "no spaces" }), { code: "invalid_event" });

    // Resume: away, two messages missed, back with the saved cursor.
    const saved = pg.cursor();
    pg.close();
    await apiPublish(channel, { n: 4 });
    await apiPublish(channel, { n: 5 });
    const again = new Pushgate(BASE, { ...options, cursor: saved });
    t.after(() => again.close());
    const got2 = [];
    again.subscribe(channel, (m) => got2.push(m.offset));
    await waitFor(() => got2.length === 2, 5000, "missed messages");
    assert.deepEqual(got2, [4, 5]);

    // A second channel joins the same client (HTTP transports restart their request).
    const other = `${channel}-b`;
    const got3 = [];
    again.subscribe(other, (m) => got3.push(m.data));
    await waitFor(() => again.cursor().includes("~"), 5000, "position of the second channel");
    await apiPublish(other, "hello");
    await apiPublish(channel, { n: 6 });
    await waitFor(() => got3.length === 1 && got2.length === 3, 5000, "both channels");
    assert.deepEqual(got3, ["hello"]);
  });
}

test("a stale cursor (unknown epoch) yields a reset, then live messages", { skip }, async (t) => {
  const channel = `smoke-reset-${Date.now()}`;
  await apiPublish(channel, 1);
  const stale = `${Buffer.from(channel).toString("base64url")}.nosuchepoch.1`;
  const pg = new Pushgate(BASE, { transports: ["longpoll"], rememberTransport: false, cursor: stale });
  t.after(() => pg.close());
  const resets = [];
  const got = [];
  pg.on("reset", (r) => resets.push(r));
  pg.subscribe(channel, (m) => got.push(m.offset));
  await waitFor(() => resets.length === 1, 5000, "reset");
  assert.equal(resets[0].channel, channel);
  assert.equal(resets[0].offset, 1);
  await apiPublish(channel, 2);
  await waitFor(() => got.length === 1, 5000, "live message");
  assert.deepEqual(got, [2]);
});

test("falls back from a refused WebSocket URL to long-polling", { skip }, async (t) => {
  // A WebSocket class that always fails stands in for a network that blocks upgrades.
  class Blocked {
    constructor() {
      setTimeout(() => this.onclose?.({ code: 1006 }), 5);
    }
    close() {}
  }
  const pg = new Pushgate(BASE, { WebSocket: Blocked, rememberTransport: false });
  t.after(() => pg.close());
  const states = [];
  pg.on("state", (s) => states.push(`${s.state}:${s.transport ?? ""}`));
  await waitFor(() => pg.state === "connected", 5000, "connected");
  assert.equal(pg.transport, "longpoll");
  assert.deepEqual(states, ["connecting:websocket", "connecting:longpoll", "connected:longpoll"]);
});

test("upgrades long-poll → WebSocket while messages flow: none lost, none doubled", { skip: skip || (typeof WebSocket !== "function" && "run node with --experimental-websocket") }, async (t) => {
  let allow = false;
  // Refuses until `allow`, like a network that starts passing WebSocket later.
  class Gate extends WebSocket {
    constructor(url) {
      super(allow ? url : url.replace(/\/ws$/, "/no-such-ws"));
    }
  }
  const channel = `smoke-upgrade-${Date.now()}`;
  const pg = new Pushgate(BASE, { WebSocket: Gate, transports: ["websocket", "longpoll"], upgradeInterval: 500, rememberTransport: false });
  t.after(() => pg.close());
  const got = [];
  const states = [];
  pg.on("state", (s) => states.push(s.state));
  pg.subscribe(channel, (m) => got.push(m.data));
  await waitFor(() => pg.transport === "longpoll", 5000, "long-poll");
  await waitFor(() => pg.cursor() !== "", 5000, "a position");
  let n = 0;
  let publishing = true;
  const publisher = (async () => {
    while (publishing) {
      await apiPublish(channel, ++n);
      await new Promise((r) => setTimeout(r, 5));
    }
  })();
  await new Promise((r) => setTimeout(r, 200));
  allow = true;
  await waitFor(() => pg.transport === "websocket", 5000, "upgrade");
  await new Promise((r) => setTimeout(r, 200));
  publishing = false;
  await publisher;
  await waitFor(() => got.length === n, 5000, `all ${n} messages`);
  assert.deepEqual(got, Array.from({ length: n }, (_, i) => i + 1));
  assert.ok(!states.includes("reconnecting"), "no disconnect during the switch");
});
