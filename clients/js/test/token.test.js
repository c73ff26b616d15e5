// Tokens and users against the in-memory server (fake-server.js): the token
// on every transport, refresh before expiry, what the close codes 4002/4003
// and the HTTP refusals do, the personal channel, send, presence, join/leave.

import { test } from "node:test";
import assert from "node:assert/strict";
import { Pushgate, tokenPayload, refreshDelay, authFailure, PushgateError } from "../pushgate.js";
import { FakeServer, fakePage, waitFor } from "./fake-server.js";

const FAST = {
  openTimeout: 300,
  minDelay: 10,
  maxDelay: 80,
  stableAfter: 0,
  heartbeatTimeout: 2000,
  longpollTimeout: 300,
  pollInterval: 30,
  upgradeInterval: 0,
  rememberTransport: false,
};

/** An unsigned JWT-shaped token: the client reads, never verifies. */
function token(claims) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  return `${b64({ alg: "HS256", typ: "JWT" })}.${b64(claims)}.c2ln`;
}
const inSecs = (s) => Math.floor(Date.now() / 1000) + s;

let prefixSeq = 0;
function newServer() {
  return new FakeServer({ prefix: `/t${++prefixSeq}` });
}

/** A client on `server`, closed after the test; records states, errors and events. */
function client(t, server, options = {}) {
  const pg = new Pushgate(server.base, {
    ...FAST,
    WebSocket: server.WebSocket,
    EventSource: server.EventSource,
    fetch: server.fetch,
    ...options,
  });
  pg.states = [];
  pg.errors = [];
  pg.seen = [];
  pg.on("state", (s) => pg.states.push(s));
  pg.on("error", (e) => pg.errors.push(e));
  for (const type of ["join", "leave", "direct", "disconnected"]) pg.on(type, (e) => pg.seen.push({ type, ...e }));
  t.after(() => pg.close());
  return pg;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

test("tokenPayload reads a JWT's claims without verifying; refreshDelay and authFailure", () => {
  assert.deepEqual(tokenPayload(token({ sub: "alice", exp: 5 })), { sub: "alice", exp: 5 });
  assert.equal(tokenPayload("not a token"), null);
  assert.equal(tokenPayload("a.!!!.c"), null);
  assert.equal(tokenPayload(`a.${Buffer.from("[1]").toString("base64url")}.c`), null);
  // 60 s before exp, at most half of what is left, at least 1 s.
  assert.equal(refreshDelay(1000, 0), 1000 * 1000 - 60000);
  assert.equal(refreshDelay(10, 0), 5000);
  assert.equal(refreshDelay(10, 20000), 1000);
  assert.equal(refreshDelay(undefined, 0), null);
  const closed = (code) => Object.assign(new PushgateError("x", "y"), { closeCode: code });
  assert.equal(authFailure(closed(4002)), "expired");
  assert.equal(authFailure(closed(4003)), "disconnected");
  assert.equal(authFailure(closed(4401)), "unauthorized");
  assert.equal(authFailure(Object.assign(new PushgateError("disconnected", "y"), { endReason: "expired" })), "expired");
  assert.equal(authFailure(Object.assign(new PushgateError("disconnected", "y"), { endReason: "disconnected" })), "disconnected");
  assert.equal(authFailure(new PushgateError("token_expired", "y")), "expired");
  assert.equal(authFailure(new PushgateError("forbidden", "y")), "forbidden");
  assert.equal(authFailure(closed(1006)), null);
});

test("the token goes on every transport: ?token= where the browser opens the URL, Bearer on fetch", async (t) => {
  const page = fakePage();
  t.after(() => page.remove());
  const tok = token({ sub: "alice", exp: inSecs(3600) });
  for (const transport of ["websocket", "sse", "stream", "longpoll", "poll", "iframe"]) {
    const server = newServer();
    const pg = client(t, server, { transports: [transport], token: tok });
    pg.subscribe("news", () => {});
    await waitFor(() => pg.state === "connected" && pg.cursor().includes(Buffer.from("news").toString("base64url")), 2000, `${transport} connected`);
    await pg.publish("news", 1);
    const how = new Set(server.tokens.map(([h, v]) => (assert.equal(v, tok, transport), h)));
    const want = { websocket: ["ws"], sse: ["query", "bearer"], stream: ["bearer"], longpoll: ["bearer"], poll: ["bearer"], iframe: ["query", "bearer"] }[transport];
    assert.deepEqual([...how].sort(), want.sort(), `${transport}: ${server.log.join(" | ")}`);
    assert.equal(pg.user, "alice");
    pg.close();
  }
});

test("to another origin, fetch carries ?token= instead of a header (no CORS preflight for Authorization)", async (t) => {
  const page = fakePage("http://app.test");
  t.after(() => page.remove());
  const tok = token({ sub: "alice", exp: inSecs(3600) });
  const server = newServer();
  const pg = client(t, server, { transports: ["longpoll"], token: tok });
  pg.subscribe("news", () => {});
  await waitFor(() => pg.state === "connected");
  await pg.publish("news", 1);
  assert.ok(server.tokens.length > 0);
  assert.ok(server.tokens.every(([how]) => how === "query"), JSON.stringify(server.tokens));
  pg.close();
});

test("getToken before connecting; the personal channel #<sub> is subscribed and direct messages arrive as `direct`", async (t) => {
  const server = newServer();
  let calls = 0;
  const pg = client(t, server, {
    transports: ["websocket"],
    getToken: async () => (calls++, token({ sub: "bob", exp: inSecs(3600) })),
  });
  const direct = [];
  pg.on("message", (m) => m.channel === "#bob" && direct.push(m.data));
  await waitFor(() => [...server.sockets].some((s) => s.subs.has("#bob")), 2000, "#bob subscribed");
  assert.equal(calls, 1);
  assert.match(server.log.find((l) => l.startsWith("ws ")), /token=/);
  server.sender = "alice";
  server.publish("#bob", { from: "alice", data: { text: "hi" } });
  await waitFor(() => pg.seen.some((e) => e.type === "direct"));
  const d = pg.seen.find((e) => e.type === "direct");
  assert.equal(d.from, "alice");
  assert.deepEqual(d.data, { text: "hi" });
  assert.equal(d.message.channel, "#bob");
  assert.deepEqual(direct, [{ from: "alice", data: { text: "hi" } }]);
});

test("refresh before expiry: an auth command on WebSocket, same socket", async (t) => {
  const server = newServer();
  let n = 0;
  const tokens = [];
  const pg = client(t, server, {
    transports: ["websocket"],
    tokenRefreshMargin: 500,
    getToken: () => {
      const tok = token({ sub: "alice", exp: inSecs(2), n: n++ });
      tokens.push(tok);
      return tok;
    },
  });
  pg.subscribe("c", () => {});
  await waitFor(() => pg.state === "connected");
  const socket = [...server.sockets][0];
  await waitFor(() => server.commands.some((c) => c.type === "auth"), 3000, "an auth command");
  const auth = server.commands.find((c) => c.type === "auth");
  assert.equal(auth.token, tokens[1]);
  assert.ok([...server.sockets][0] === socket && socket.readyState === 1, "the same socket stays open");
  assert.equal(server.log.filter((l) => l.startsWith("ws ")).length, 1);
});

test("refresh before expiry on HTTP: an event stream reopens with the new token; a poll's next request carries it", async (t) => {
  for (const transport of ["sse", "longpoll"]) {
    const server = newServer();
    const tokens = [];
    const pg = client(t, server, {
      transports: [transport],
      tokenRefreshMargin: 500,
      getToken: () => {
        const tok = token({ sub: "alice", exp: inSecs(2), n: tokens.length });
        tokens.push(tok);
        return tok;
      },
    });
    const got = [];
    pg.subscribe("c", (m) => got.push(m.data));
    await waitFor(() => pg.state === "connected");
    server.publish("c", 1);
    await waitFor(() => got.length === 1);
    await waitFor(() => tokens.length >= 2 && server.tokens.some(([, v]) => v === tokens[1]), 3000, `${transport}: new token used`);
    server.publish("c", 2);
    await waitFor(() => got.length === 2, 2000, `${transport}: still delivering`);
    assert.deepEqual(got, [1, 2], `${transport}: no loss, no duplicate`);
    assert.equal(pg.state, "connected");
    pg.close();
  }
});

test("close 4002 (expired): a fresh token and a reconnect at once, with no backoff", async (t) => {
  const server = newServer();
  const tokens = [];
  const pg = client(t, server, {
    transports: ["websocket"],
    minDelay: 5000, // a backoff would show
    maxDelay: 5000,
    getToken: () => {
      const tok = token({ sub: "alice", exp: inSecs(3600), n: tokens.length });
      tokens.push(tok);
      return tok;
    },
  });
  const got = [];
  pg.subscribe("c", (m) => got.push(m.data));
  await waitFor(() => pg.state === "connected" && [...server.sockets].some((s) => s.subs.has("c")));
  server.publish("c", 1);
  await waitFor(() => got.length === 1);
  const started = Date.now();
  server.closeSockets(4002, "token expired");
  server.publish("c", 2);
  await waitFor(() => got.length === 2, 1000, "resumed with the new token");
  assert.ok(Date.now() - started < 1000);
  assert.equal(tokens.length, 2);
  assert.ok(server.log.at(-1).startsWith("ws ") || server.log.filter((l) => l.includes(encodeURIComponent(tokens[1]))).length === 1);
  assert.ok(server.tokens.some(([how, v]) => how === "ws" && v === tokens[1]));
  assert.deepEqual(got, [1, 2]);
});

test("close 4003 (disconnected): getToken once; the same token means stop and a `disconnected` event", async (t) => {
  const server = newServer();
  const tok = token({ sub: "alice", exp: inSecs(3600) });
  let calls = 0;
  const pg = client(t, server, { transports: ["websocket"], getToken: () => (calls++, tok) });
  pg.subscribe("c", () => {});
  await waitFor(() => pg.state === "connected");
  assert.equal(calls, 1);
  const opened = server.log.filter((l) => l.startsWith("ws ")).length;
  server.closeSockets(4003, "disconnected");
  await waitFor(() => pg.seen.some((e) => e.type === "disconnected"), 1000, "disconnected event");
  assert.equal(calls, 2);
  assert.equal(pg.state, "disconnected");
  await sleep(200);
  assert.equal(server.log.filter((l) => l.startsWith("ws ")).length, opened, "no reconnect");
});

test("close 4003 with a new token from getToken reconnects at once; without getToken it stops", async (t) => {
  const server = newServer();
  let n = 0;
  const pg = client(t, server, { transports: ["websocket"], getToken: () => token({ sub: "alice", exp: inSecs(3600), n: n++ }) });
  pg.subscribe("c", () => {});
  await waitFor(() => pg.state === "connected");
  server.closeSockets(4003);
  await waitFor(() => n === 2 && pg.state === "connected" && server.sockets.size === 1, 1000, "reconnected with the new token");
  assert.equal(pg.seen.filter((e) => e.type === "disconnected").length, 0);

  const server2 = newServer();
  const pg2 = client(t, server2, { transports: ["websocket"], token: token({ sub: "bob", exp: inSecs(3600) }) });
  await waitFor(() => pg2.state === "connected");
  server2.closeSockets(4003);
  await waitFor(() => pg2.state === "disconnected");
  assert.ok(pg2.seen.some((e) => e.type === "disconnected"));
  const server3 = newServer();
  const pg3 = client(t, server3, { transports: ["websocket"], token: token({ sub: "bob", exp: inSecs(3600) }) });
  await waitFor(() => pg3.state === "connected");
  server3.closeSockets(4002);
  await waitFor(() => pg3.state === "disconnected");
  assert.equal(pg3.errors.at(-1).code, "token_expired");
});

test("an event stream's end `expired` and a poll's 401 token_expired get a fresh token at once", async (t) => {
  for (const transport of ["stream", "longpoll"]) {
    const server = newServer();
    const tokens = [];
    const pg = client(t, server, {
      transports: [transport],
      minDelay: 5000,
      maxDelay: 5000,
      getToken: () => {
        const tok = token({ sub: "alice", exp: inSecs(3600), n: tokens.length });
        tokens.push(tok);
        server.refuseHttp = null; // the fresh token is accepted
        return tok;
      },
    });
    pg.subscribe("c", () => {});
    await waitFor(() => pg.state === "connected");
    if (transport === "stream") server.endStreams("expired");
    else {
      server.refuseHttp = { status: 401, code: "token_expired" };
      server.publish("c", 1); // answers the waiting long-poll: the next request is refused
    }
    await waitFor(() => tokens.length === 2, 1000, `${transport}: asked for a new token`);
    await waitFor(() => pg.state === "connected" && server.tokens.some(([, v]) => v === tokens[1]), 1000, `${transport}: reconnected`);
    pg.close();
  }
});

test("a refused subscription is an error for its channel, not a retry loop", async (t) => {
  // HTTP: the request for the channel is refused (403); the others go on without it.
  const server = newServer();
  const pg = client(t, server, { transports: ["poll"], token: token({ sub: "alice", exp: inSecs(3600) }) });
  pg.subscribe("secret", () => {});
  await waitFor(() => pg.state === "connected");
  server.refuseHttp = { status: 403, code: "forbidden", message: "alice may not subscribe to secret", channel: "secret" };
  await waitFor(() => pg.errors.some((e) => e.code === "forbidden"), 1000, "forbidden error");
  const e = pg.errors.find((e) => e.code === "forbidden");
  assert.equal(e.channel, "secret");
  await sleep(150);
  const polls = server.log.filter((l) => l.includes("channel=secret")).length;
  await sleep(200);
  assert.equal(server.log.filter((l) => l.includes("channel=secret")).length, polls, "not asked again");
  assert.equal(pg.errors.filter((e) => e.code === "forbidden").length, 1);
  assert.equal(pg.state, "connected", "the other channels go on");
  server.publish("#alice", { from: "bob", data: 1 });
  await waitFor(() => pg.seen.some((e) => e.type === "direct"), 1000, "the personal channel still delivers");

  // WebSocket: the subscribe's error reply names the channel; the socket stays.
  const ws = newServer();
  ws.refuseSubscribe = true;
  const pg2 = client(t, ws, { transports: ["websocket"] });
  pg2.subscribe("secret", () => {});
  await waitFor(() => pg2.errors.some((e) => e.code === "forbidden"), 1000);
  assert.equal(pg2.errors[0].channel, "secret");
  ws.refuseSubscribe = false;
  const got = [];
  pg2.subscribe("open", (m) => got.push(m.data));
  await waitFor(() => [...ws.sockets].some((s) => s.subs.has("open")));
  ws.publish("open", "x");
  await waitFor(() => got.length === 1);
  assert.equal(ws.commands.filter((c) => c.type === "subscribe" && c.channel === "secret").length, 1, "not asked again on this socket");
});

test("send and presence: over WebSocket and over POST /command", async (t) => {
  for (const transport of ["websocket", "longpoll"]) {
    const server = newServer();
    server.online.add("bob");
    server.present = [{ user: "alice", clients: ["1"] }, { user: "bob", clients: ["2", "3"] }];
    const pg = client(t, server, { transports: [transport], token: token({ sub: "alice", exp: inSecs(3600) }) });
    pg.subscribe("chat:lobby", () => {});
    assert.deepEqual(await pg.send(["bob", "carol"], { text: "hi" }), { online: ["bob"], offline: ["carol"] });
    assert.deepEqual(await pg.send("bob", 1), { online: ["bob"], offline: [] });
    assert.deepEqual(await pg.presence("chat:lobby"), { channel: "chat:lobby", users: server.present, anonymous: 0 });
    await assert.rejects(pg.send([], 1), /user id/);
    await assert.rejects(pg.send("a b", 1), /user id/);
    await assert.rejects(pg.presence("bad name"), (e) => e.code === "invalid_channel");
    pg.close();
  }
});

test("join and leave reach pg's `join`/`leave` listeners for subscribed channels", async (t) => {
  for (const transport of ["websocket", "sse", "stream"]) {
    const server = newServer();
    const pg = client(t, server, { transports: [transport] });
    pg.subscribe("chat:lobby", () => {});
    await waitFor(() => pg.state === "connected" && pg.cursor() !== "");
    server.presenceEvent("join", "chat:lobby", "bob", "7");
    server.presenceEvent("leave", "chat:lobby", null, "8");
    await waitFor(() => pg.seen.length === 2, 1000, transport);
    assert.deepEqual(pg.seen, [
      { type: "join", channel: "chat:lobby", user: "bob", client: "7" },
      { type: "leave", channel: "chat:lobby", user: null, client: "8" },
    ]);
    pg.close();
  }
});

test("getToken answering null connects anonymously; a getToken that throws is an error and a backoff", async (t) => {
  const server = newServer();
  const pg = client(t, server, { transports: ["websocket"], getToken: async () => null });
  pg.subscribe("c", () => {});
  await waitFor(() => pg.state === "connected");
  assert.equal(pg.user, null);
  assert.ok(!server.log.some((l) => l.includes("token=")));

  const server2 = newServer();
  let calls = 0;
  const pg2 = client(t, server2, {
    transports: ["websocket"],
    getToken: async () => {
      if (calls++ === 0) throw new Error("backend down");
      return token({ sub: "carol", exp: inSecs(3600) });
    },
  });
  await waitFor(() => pg2.state === "connected", 2000);
  assert.equal(pg2.errors[0].message, "backend down");
  assert.ok(pg2.states.some((s) => s.state === "reconnecting"));
  assert.equal(pg2.user, "carol");
});
