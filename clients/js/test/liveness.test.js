// Liveness against the in-memory server (fake-server.js): the announced
// heartbeat and its bound, visible pings on every transport, `end`, the
// backoff reset and the page's online/visibility events. A bound is at least
// a second (H + max(H/2, 1 s)), so the transports of one scenario run as
// concurrent subtests, each on its own server.

import { test } from "node:test";
import assert from "node:assert/strict";
import { Pushgate } from "../pushgate.js";
import { FakeServer, fakePage, waitFor } from "./fake-server.js";

const FAST = {
  openTimeout: 300,
  minDelay: 10,
  maxDelay: 80,
  stableAfter: 0, // no demotion: each test runs one transport
  heartbeatTimeout: 150, // the fallback; small, so that obeying it instead of the announcement would show
  longpollTimeout: 300,
  pollInterval: 30,
  upgradeInterval: 0,
  rememberTransport: false,
};

/** The iframe transport needs a page; the others ignore it. */
const page = fakePage();
test.after(() => page.remove());

let prefixSeq = 0;

/** A server of its own (a path prefix), so that concurrent subtests share the page. */
function newServer(heartbeat = 100) {
  const server = new FakeServer({ prefix: `/s${++prefixSeq}` });
  server.heartbeat = heartbeat;
  return server;
}

/** A client on `server`, closed after the test; records its state events and messages. */
function client(t, server, options = {}) {
  const pg = new Pushgate(server.base, {
    ...FAST,
    WebSocket: server.WebSocket,
    EventSource: server.EventSource,
    fetch: server.fetch,
    ...options,
  });
  pg.states = [];
  pg.messages = [];
  pg.on("state", (s) => pg.states.push(s));
  pg.on("message", (m) => pg.messages.push(m.data));
  t.after(() => pg.close());
  return pg;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const reconnects = (pg) => pg.states.filter((s) => s.state === "reconnecting");
/** Requests (or sockets) opened for a transport, from the server's log. */
const opened = (server, transport) =>
  server.log.filter((l) => l.startsWith(transport === "websocket" ? "ws " : `GET /${transport}?`)).length;

/** Connected on `transport`, subscribed to "c", and one message through. */
async function connected(t, server, transport, options = {}) {
  const pg = client(t, server, { transports: [transport], ...options });
  const got = [];
  pg.subscribe("c", (m) => got.push(m.data));
  await waitFor(() => pg.state === "connected" && pg.cursor() !== "", 2000, `${transport} connected`);
  server.publish("c", 1);
  await waitFor(() => got.length === 1, 2000, "the first message");
  return { pg, got };
}

const STREAMS = ["websocket", "sse", "stream", "iframe"];
const ALL = [...STREAMS, "longpoll", "poll"];

/** Runs `fn` once per transport, as concurrent subtests. */
function each(t, transports, fn) {
  return Promise.all(transports.map((transport) => t.test(transport, (t) => fn(t, transport))));
}

test("a link silent past its bound is declared dead, and the client reconnects and resumes", { concurrency: true }, async (t) => {
  await each(t, ALL, async (t, transport) => {
    const server = newServer();
    const { pg, got } = await connected(t, server, transport);
    server.mute = true; // the network drops without a word: no close, no error
    server.publish("c", 2);
    await waitFor(() => reconnects(pg).length > 0, 4000, "the dead link noticed");
    assert.match(reconnects(pg)[0].error.message, /no sign of life/);
    server.mute = false;
    server.publish("c", 3);
    await waitFor(() => got.length === 3, 4000, "resumed");
    assert.deepEqual(got, [1, 2, 3]);
    assert.equal(pg.transport, transport);
  });
});

test("the server's pings keep a quiet link alive across several bounds", { concurrency: true }, async (t) => {
  await each(t, STREAMS, async (t, transport) => {
    const server = newServer(100); // bound 1100 ms
    const { pg, got } = await connected(t, server, transport);
    await sleep(2500); // nothing published: only pings
    assert.deepEqual(reconnects(pg), []);
    assert.equal(opened(server, transport), 1, "one connection all along");
    server.publish("c", 2);
    await waitFor(() => got.length === 2);
    assert.deepEqual(pg.messages, [1, 2], "pings reach no handler");
  });
});

test("the bound follows the announced interval, not heartbeatTimeout", { concurrency: true }, async (t) => {
  await each(t, ["websocket", "sse", "iframe"], async (t, transport) => {
    const server = newServer(1000); // bound 2000 ms
    server.pings = false; // announced, but never sent: only the bound keeps the link
    const { pg, got } = await connected(t, server, transport);
    await sleep(700); // far beyond heartbeatTimeout (150), below the announced interval
    assert.deepEqual(reconnects(pg), [], "alive within the announced interval");
    server.publish("c", 2);
    await waitFor(() => got.length === 2);
    // With no ping ever sent, the announced bound does end the link.
    await waitFor(() => reconnects(pg).length > 0, 4000, "dead past the announced bound");
  });
});

test("end with reason lifetime or behind: the stream is replaced at once, with no state change", { concurrency: true }, async (t) => {
  await each(t, ["sse", "stream", "iframe"], async (t, transport) => {
    const server = newServer();
    const { pg, got } = await connected(t, server, transport);
    const statesBefore = pg.states.length;
    let n = 1;
    for (const reason of ["lifetime", "behind"]) {
      const cursor = pg.cursor();
      server.endStreams(reason);
      server.publish("c", ++n); // while the stream is being replaced
      await waitFor(() => got.length === n, 2000, `resumed after ${reason}`);
      const reopened = server.log.filter((l) => l.startsWith(`GET /${transport}?`)).at(-1);
      assert.ok(reopened.includes(`since=${encodeURIComponent(cursor)}`), `reopened with the cursor: ${reopened}`);
    }
    assert.deepEqual(got, [1, 2, 3]);
    assert.equal(opened(server, transport), 3);
    assert.equal(pg.states.length, statesBefore, "no state change");
    assert.deepEqual(pg.messages, [1, 2, 3], "end frames reach no handler");
  });
});

test("end with reason shutdown (or any other): the link is dead and the client reconnects", { concurrency: true }, async (t) => {
  await each(t, ["sse", "stream", "iframe"], async (t, transport) => {
    const server = newServer();
    const { pg, got } = await connected(t, server, transport);
    server.endStreams("shutdown");
    await waitFor(() => reconnects(pg).length === 1, 2000, "reconnecting");
    assert.equal(reconnects(pg)[0].error.message, "the server ended the stream: shutdown");
    server.publish("c", 2);
    await waitFor(() => got.length === 2, 2000, "resumed");
    assert.deepEqual(pg.messages, [1, 2]);
  });
});

test("iframe: the document ending without end still means the stream ended", async (t) => {
  const server = newServer();
  const { pg, got } = await connected(t, server, "iframe");
  for (const s of server.streams) s.cut();
  await waitFor(() => reconnects(pg).length === 1, 2000, "reconnecting");
  assert.match(reconnects(pg)[0].error.message, /iframe stream ended/);
  server.publish("c", 2);
  await waitFor(() => got.length === 2, 2000, "resumed");
});

test("SSE: a message published under the event name ping or end stays a message", async (t) => {
  const server = newServer();
  const { pg, got } = await connected(t, server, "sse", { sseEvents: ["ping", "end"] });
  server.publish("c", 2, "ping");
  server.publish("c", 3, "end");
  await waitFor(() => got.length === 3);
  assert.deepEqual(got, [1, 2, 3]);
  assert.deepEqual(reconnects(pg), []);
});

test("backoff attempts reset once a connection delivers, not when it merely opens", async (t) => {
  const server = newServer(0);
  server.httpUp = false;
  const pg = client(t, server, { transports: ["websocket"], stableAfter: 60000 });
  pg.subscribe("c", () => {});
  await waitFor(() => reconnects(pg).length >= 2, 2000, "2 failed rounds");
  // It opens (the ping is answered) but the subscription is refused: no delivery.
  server.refuseSubscribe = true;
  server.httpUp = true;
  await waitFor(() => pg.state === "connected");
  const before = reconnects(pg);
  server.dropAll();
  await waitFor(() => reconnects(pg).length > before.length, 2000, "dropped");
  assert.equal(reconnects(pg)[before.length].attempt, before.at(-1).attempt + 1, "an open link that delivered nothing does not reset the count");
  server.refuseSubscribe = false;
  await waitFor(() => pg.state === "connected" && [...server.sockets].some((s) => s.subs.has("c")), 2000, "subscribed");
  await sleep(10);
  const count = reconnects(pg).length;
  server.dropAll();
  await waitFor(() => reconnects(pg).length > count, 2000, "dropped again");
  assert.equal(reconnects(pg)[count].attempt, 1, "counting starts again after the confirmed subscription");
});

test("the attempt count resets on a long-poll answer, and on a pong with no channel", async (t) => {
  for (const [transport, channels] of [["longpoll", ["c"]], ["websocket", []]]) {
    const server = newServer(0);
    server.httpUp = false;
    const pg = client(t, server, { transports: [transport], stableAfter: 60000 });
    for (const c of channels) pg.subscribe(c, () => {});
    await waitFor(() => reconnects(pg).length >= 2, 2000, "2 failed rounds");
    server.httpUp = true;
    await waitFor(() => pg.state === "connected");
    assert.ok(reconnects(pg).at(-1).attempt >= 2);
    await sleep(20);
    const count = reconnects(pg).length;
    server.httpUp = false; // the next long poll fails
    server.dropAll(); // and the socket is cut
    await waitFor(() => reconnects(pg).length > count, 2000, `${transport} dropped`);
    assert.equal(reconnects(pg)[count].attempt, 1, transport);
    pg.close();
  }
});

test("online retries at once and resets the attempt count; the page becoming visible retries at once", async (t) => {
  const server = newServer(0);
  server.httpUp = false;
  const pg = client(t, server, { transports: ["poll"], minDelay: 60000, maxDelay: 60000, fastRetries: 0 });
  const waitingLong = () => pg.state === "reconnecting" && reconnects(pg).at(-1).delay >= 1000;
  await waitFor(waitingLong, 5000, "a long backoff");
  let count = reconnects(pg).length;
  page.setVisibility("hidden");
  page.setVisibility("visible");
  assert.equal(pg.state, "connecting", "a round starts during the event");
  await waitFor(() => reconnects(pg).length > count, 2000, "the round failed");
  assert.equal(reconnects(pg)[count].attempt, count + 1, "visible: the count goes on");

  await waitFor(waitingLong, 5000, "a long backoff");
  count = reconnects(pg).length;
  assert.ok(count >= 2);
  page.fire("online"); // still down: one more round, counted from 0 again
  assert.equal(pg.state, "connecting", "a round starts during the event");
  await waitFor(() => reconnects(pg).length > count, 2000, "the round failed");
  assert.equal(reconnects(pg)[count].attempt, 1, "online: counting starts again");

  await waitFor(waitingLong, 5000, "a long backoff");
  server.httpUp = true;
  page.fire("online");
  assert.equal(pg.state, "connecting");
  await waitFor(() => pg.state === "connected", 2000, "connected");
});

test("the page becoming visible judges the link at once (timers run late in a background tab)", async (t) => {
  const server = newServer(0);
  const pg = client(t, server, { transports: ["websocket"], heartbeatTimeout: 60000 }); // checked once a second
  await waitFor(() => pg.state === "connected");
  page.setVisibility("hidden");
  const realNow = Date.now;
  Date.now = () => realNow() + 120000; // two minutes in the background, the link silent
  try {
    page.setVisibility("visible");
    assert.equal(reconnects(pg).length, 1, "judged during the event, not at the next tick");
    assert.equal(pg.state, "connecting", "and, visible, retried without waiting out the backoff");
  } finally {
    Date.now = realNow;
  }
  assert.match(reconnects(pg)[0].error.message, /no sign of life/);
  await waitFor(() => pg.state === "connected");
});
