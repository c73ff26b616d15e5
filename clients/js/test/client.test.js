// The client against an in-memory server (fake-server.js): connection,
// fallback, resume, upgrade, queue and heartbeat — with millisecond timings.

import { test } from "node:test";
import assert from "node:assert/strict";
import { Pushgate } from "../pushgate.js";
import { FakeServer, waitFor } from "./fake-server.js";

const FAST = {
  openTimeout: 150,
  minDelay: 10,
  maxDelay: 80,
  stableAfter: 400,
  heartbeatTimeout: 2000,
  longpollTimeout: 300,
  pollInterval: 30,
  upgradeInterval: 0,
  rememberTransport: false,
};

/** A client on `server`, closed after the test; records its state events. */
function client(t, server, options = {}) {
  const pg = new Pushgate("http://pushgate.test", { ...FAST, WebSocket: server.WebSocket, fetch: server.fetch, ...options });
  pg.states = [];
  pg.on("state", (s) => pg.states.push(s));
  t.after(() => pg.close());
  return pg;
}

test("connects over WebSocket, delivers, and resumes after a drop without loss or duplicates", async (t) => {
  const server = new FakeServer();
  const pg = client(t, server);
  const got = [];
  pg.subscribe("news", (m) => got.push(m.data));
  await waitFor(() => pg.state === "connected", 2000, "connected");
  assert.equal(pg.transport, "websocket");
  assert.deepEqual(pg.states.slice(0, 2), [
    { state: "connecting", transport: "websocket" },
    { state: "connected", transport: "websocket" },
  ]);
  await waitFor(() => server.commands.some((c) => c.type === "subscribe"), 1000, "subscribe");
  await new Promise((r) => setTimeout(r, 10));
  for (const d of ["a", "b", "c"]) server.publish("news", d);
  await waitFor(() => got.length === 3, 1000, "3 messages");
  const cursorBefore = pg.cursor();
  assert.match(cursorBefore, /^bmV3cw\.ep\d+\.3$/);

  server.dropAll();
  server.publish("news", "d"); // while the client is away
  server.publish("news", "e");
  await waitFor(() => got.length === 5, 2000, "5 messages");
  assert.deepEqual(got, ["a", "b", "c", "d", "e"]);
  const resubscribe = server.commands.filter((c) => c.type === "subscribe").pop();
  assert.equal(resubscribe.since, cursorBefore, "resumes from the cursor");
  const reconnecting = pg.states.find((s) => s.state === "reconnecting");
  assert.equal(reconnecting.attempt, 1);
  assert.ok(reconnecting.delay >= 0 && reconnecting.delay < FAST.minDelay);
  assert.ok(reconnecting.error instanceof Error);
});

test("duplicates are dropped and an epoch change is announced with a reset", async (t) => {
  const server = new FakeServer();
  const pg = client(t, server);
  const got = [];
  const resets = [];
  const all = [];
  pg.subscribe("c", (m) => got.push(`${m.epoch}:${m.offset}`));
  pg.on("reset", (r) => resets.push(r));
  pg.on("message", (m) => all.push(m.offset));
  await waitFor(() => server.sockets.size === 1 && [...server.sockets][0].subs.has("c"), 1000, "subscribed");
  server.publish("c", 1);
  const ws = [...server.sockets][0];
  await waitFor(() => got.length === 1);
  ws._frame(server.channel("c").history[0]); // the same message again
  server.restart("c");
  server.publish("c", 2);
  await waitFor(() => got.length === 2);
  const e2 = server.channel("c").epoch;
  assert.deepEqual(got.slice(1), [`${e2}:1`]);
  assert.equal(resets.length, 1);
  assert.deepEqual(resets[0], { type: "reset", channel: "c", epoch: e2, offset: 0 });
  assert.deepEqual(all, [1, 1]);
});

test("falls back when the WebSocket opens but never answers (openTimeout), then works over long-poll", async (t) => {
  const server = new FakeServer();
  server.wsMode = "silent";
  const pg = client(t, server);
  const got = [];
  pg.subscribe("news", (m) => got.push(m.data));
  await waitFor(() => pg.state === "connected", 2000, "connected");
  assert.equal(pg.transport, "longpoll");
  assert.deepEqual(
    pg.states.map((s) => `${s.state}:${s.transport}`),
    ["connecting:websocket", "connecting:longpoll", "connected:longpoll"],
    "sse is skipped where EventSource does not exist",
  );
  server.publish("news", 1);
  server.publish("news", 2);
  await waitFor(() => got.length === 2, 2000, "messages over long-poll");
  const reply = await pg.publish("news", 3, { event: "tick" });
  assert.equal(reply.type, "published");
  assert.equal(reply.offset, 3);
  await waitFor(() => got.length === 3);
  assert.deepEqual(got, [1, 2, 3]);
  assert.ok(server.log.some((l) => l.startsWith("POST /command") && l.includes('"event":"tick"')));
  assert.ok(server.log.some((l) => l.startsWith("GET /longpoll") && l.includes("since=")));
});

test("a transport that opens and dies before any frame falls back at once", async (t) => {
  const server = new FakeServer();
  server.wsMode = "cut";
  const started = Date.now();
  const pg = client(t, server, { openTimeout: 5000 });
  await waitFor(() => pg.state === "connected", 1000, "connected");
  assert.equal(pg.transport, "longpoll");
  assert.ok(Date.now() - started < 1000, "did not wait for openTimeout");
});

test("all transports down: backoff with growing attempts, then connects", async (t) => {
  const server = new FakeServer();
  server.httpUp = false;
  const pg = client(t, server, { transports: ["websocket", "poll"] });
  await waitFor(() => pg.states.filter((s) => s.state === "reconnecting").length >= 3, 3000, "3 rounds");
  const rounds = pg.states.filter((s) => s.state === "reconnecting");
  assert.deepEqual(rounds.slice(0, 3).map((s) => s.attempt), [1, 2, 3]);
  rounds.slice(0, 3).forEach((s) => assert.ok(s.delay < FAST.minDelay, "the first fastRetries attempts wait under minDelay"));
  await waitFor(() => pg.state === "reconnecting"); // between rounds: the next one starts with websocket
  server.httpUp = true;
  await waitFor(() => pg.state === "connected", 2000, "connected");
  assert.equal(pg.transport, "websocket");
});

test("publishes made while disconnected wait, then go out in order with their replies", async (t) => {
  const server = new FakeServer();
  server.httpUp = false;
  const pg = client(t, server);
  const pendingCounts = [];
  pg.on("pending", (n) => pendingCounts.push(n));
  const ps = [1, 2, 3].map((n) => pg.publish("chat", { n }));
  assert.equal(pg.pending, 3);
  server.httpUp = true;
  const replies = await Promise.all(ps);
  assert.deepEqual(replies.map((r) => r.offset), [1, 2, 3]);
  assert.deepEqual(server.channel("chat").history.map((m) => m.data.n), [1, 2, 3]);
  assert.equal(pg.pending, 0);
  assert.equal(pendingCounts.at(-1), 0);
});

test("offline queue bound, disabled queue, and error replies", async (t) => {
  const server = new FakeServer();
  server.httpUp = false;
  const small = client(t, server, { offlineQueue: { max: 1 } });
  const first = small.publish("a", 1);
  await assert.rejects(small.publish("a", 2), { code: "queue_full" });
  const off = client(t, server, { offlineQueue: false });
  await assert.rejects(off.publish("a", 1), { code: "offline" });
  server.httpUp = true;
  await first;
  await waitFor(() => off.state === "connected");
  assert.equal((await off.publish("a", 3)).type, "published");
  await assert.rejects(off.publish("forbidden", 1), (e) => e.code === "forbidden" && e.message === "not here");
  await assert.rejects(off.publish("bad channel", 1), { code: "invalid_channel" });
  await assert.rejects(off.publish("a", 1, { event: "no spaces" }), { code: "invalid_event" });
  await assert.rejects(off.publish("a", "x".repeat(70000)), { code: "too_large" });
  await assert.rejects(off.publish("a", { n: 1n }), { code: "bad_json" });
});

test("error replies over /command reject with the server's code", async (t) => {
  const server = new FakeServer();
  const pg = client(t, server, { transports: ["poll"] });
  await waitFor(() => pg.state === "connected");
  await assert.rejects(pg.publish("forbidden", 1), { code: "forbidden" });
});

test("upgrades to a better transport in parallel, with no loss or duplicate across the switch", async (t) => {
  const server = new FakeServer();
  server.wsMode = "refuse";
  const pg = client(t, server, { upgradeInterval: 150 });
  const got = [];
  pg.subscribe("live", (m) => got.push(m.data));
  await waitFor(() => pg.transport === "longpoll", 2000, "long-poll");
  let n = 0;
  const pump = setInterval(() => server.publish("live", ++n), 3);
  t.after(() => clearInterval(pump));
  await new Promise((r) => setTimeout(r, 50));
  server.wsMode = "ok";
  await waitFor(() => pg.transport === "websocket", 3000, "upgrade");
  await new Promise((r) => setTimeout(r, 60));
  clearInterval(pump);
  await waitFor(() => got.length === n, 2000, "all messages");
  assert.deepEqual(got, Array.from({ length: n }, (_, i) => i + 1));
  assert.ok(pg.states.some((s) => s.state === "connected" && s.transport === "websocket"));
  assert.equal(pg.states.filter((s) => s.state !== "connected" && s.state !== "connecting").length, 0, "no disconnect during the switch");
  await waitFor(() => !server.waiters.size, 1000, "the long-poll stops");
});

test("a server that announces no heartbeat: heartbeatTimeout of silence means a dead WebSocket", async (t) => {
  const server = new FakeServer(); // heartbeat 0: an older server, whose keep-alives are invisible
  const pg = client(t, server, { heartbeatTimeout: 250 });
  pg.subscribe("hb", () => {});
  await waitFor(() => pg.state === "connected");
  server.mute = true;
  await waitFor(() => pg.states.some((s) => s.state === "reconnecting"), 2000, "dead connection noticed");
  assert.match(pg.states.find((s) => s.state === "reconnecting").error.message, /no sign of life/);
  server.mute = false;
  await waitFor(() => pg.state === "connected", 2000, "reconnected");
  const pings = server.commands.filter((c) => c.type === "ping").length;
  assert.ok(pings <= server.log.filter((l) => l.startsWith("ws ")).length, "one ping per socket, when it opens");
});

test("remembers the transport that worked for the session and starts there", async (t) => {
  const store = new Map();
  globalThis.sessionStorage = { getItem: (k) => store.get(k) ?? null, setItem: (k, v) => store.set(k, String(v)) };
  t.after(() => delete globalThis.sessionStorage);
  const server = new FakeServer();
  server.wsMode = "refuse";
  const a = client(t, server, { rememberTransport: true });
  await waitFor(() => a.transport === "longpoll");
  a.close();
  assert.equal(store.get("pushgate:transport:http://pushgate.test"), "longpoll");
  server.wsMode = "ok";
  const b = client(t, server, { rememberTransport: true });
  await waitFor(() => b.state === "connected");
  assert.equal(b.states[0].transport, "longpoll");
});

test("unsubscribing stops delivery and the server subscription; a saved cursor resumes", async (t) => {
  const server = new FakeServer();
  const pg = client(t, server);
  const got = [];
  const stop = pg.subscribe("n", (m) => got.push(m.offset));
  await waitFor(() => [...server.sockets].some((s) => s.subs.has("n")));
  server.publish("n", 1);
  await waitFor(() => got.length === 1);
  const saved = pg.cursor();
  stop();
  await waitFor(() => server.commands.some((c) => c.type === "unsubscribe" && c.channel === "n"));
  assert.equal(pg.cursor(), "");
  server.publish("n", 2);
  server.publish("n", 3);
  const later = client(t, server, { cursor: saved, transports: ["poll"] });
  const got2 = [];
  later.subscribe("n", (m) => got2.push(m.offset));
  await waitFor(() => got2.length === 2);
  assert.deepEqual(got2, [2, 3]);
  assert.deepEqual(got, [1]);
});

test("a subscription change on an HTTP transport restarts it with the new list and the cursor", async (t) => {
  const server = new FakeServer();
  const pg = client(t, server, { transports: ["longpoll"] });
  const got = [];
  pg.subscribe("x", (m) => got.push(`${m.channel}${m.offset}`));
  await waitFor(() => pg.state === "connected");
  server.publish("x", 1);
  await waitFor(() => got.length === 1);
  pg.subscribe("y", (m) => got.push(`${m.channel}${m.offset}`));
  await waitFor(() => server.log.some((l) => l.includes("channel=x&channel=y")));
  // A live start begins where the server stands when it handles the request.
  await waitFor(() => pg.cursor().includes("~eQ."), 1000, "position of y");
  server.publish("y", 1);
  server.publish("x", 2);
  await waitFor(() => got.length === 3);
  assert.deepEqual(got.sort(), ["x1", "x2", "y1"]);
  const restart = server.log.find((l) => l.includes("channel=x&channel=y"));
  assert.match(restart, /since=eA\.ep\d+\.1/);
});

test("close() stops everything and rejects what waits; connect() starts again", async (t) => {
  const server = new FakeServer();
  server.httpUp = false;
  const pg = client(t, server);
  const p = pg.publish("a", 1);
  pg.close();
  await assert.rejects(p, { code: "closed" });
  assert.equal(pg.state, "disconnected");
  server.httpUp = true;
  pg.connect();
  await waitFor(() => pg.state === "connected");
});

test("binary messages arrive as Uint8Array on every transport", async (t) => {
  const server = new FakeServer();
  const pg = client(t, server, { transports: ["poll"] });
  const got = [];
  pg.subscribe("bin", (m) => got.push(m));
  await waitFor(() => pg.state === "connected");
  const c = server.channel("bin");
  c.offset++;
  const m = { type: "message", channel: "bin", offset: c.offset, epoch: c.epoch, encoding: "base64", data: Buffer.from([1, 2, 250]).toString("base64") };
  c.history.push(m);
  await waitFor(() => got.length === 1);
  assert.equal(got[0].encoding, "binary");
  assert.deepEqual([...got[0].data], [1, 2, 250]);
});

test("a damaged saved cursor starts live and is reported as an error", async (t) => {
  const server = new FakeServer();
  const pg = client(t, server, { cursor: "not a cursor" });
  const errors = [];
  pg.on("error", (e) => errors.push(e.code));
  await waitFor(() => pg.state === "connected");
  assert.deepEqual(errors, ["invalid_cursor"]);
});

test("the constructor validates; importing touches no browser globals", () => {
  assert.throws(() => new Pushgate("http://x", { transports: ["carrier-pigeon"], autoConnect: false }), TypeError);
  assert.throws(() => new Pushgate("", { autoConnect: false }), TypeError, "relative base needs a page");
  const pg = new Pushgate("http://x/prefix/", { autoConnect: false });
  assert.equal(pg.state, "disconnected");
  assert.throws(() => pg.subscribe("bad name", () => {}), TypeError);
});
