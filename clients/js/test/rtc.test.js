// pg.rtc against the in-memory server (fake-server.js) and a stand-in
// RTCPeerConnection (fake-rtc.js): room frames reach the room, the mesh
// follows join/leave, perfect negotiation settles crossed offers, signals go
// over the WebSocket or POST /command (with from + client_key), polls are
// refused, and a new connection rebuilds the mesh.

import { test } from "node:test";
import assert from "node:assert/strict";
import { Pushgate } from "../pushgate.js";
import { FakeServer, waitFor, fakePage } from "./fake-server.js";
import { FakeRTCPeerConnection, fakeStream } from "./fake-rtc.js";

const FAST = {
  openTimeout: 300,
  minDelay: 10,
  maxDelay: 80,
  heartbeatTimeout: 5000,
  longpollTimeout: 300,
  pollInterval: 30,
  upgradeInterval: 0,
  rememberTransport: false,
};

function client(t, server, options = {}) {
  const pg = new Pushgate(server.base, {
    ...FAST,
    WebSocket: server.WebSocket,
    EventSource: server.EventSource,
    fetch: server.fetch,
    RTCPeerConnection: FakeRTCPeerConnection,
    ...options,
  });
  t.after(() => pg.close());
  return pg;
}

/** Records a room's events as {type, peer} entries in `room.seen`. */
function record(room) {
  room.seen = [];
  room.got = [];
  for (const type of ["peer", "open", "leave", "rejoin", "error", "state", "stream", "track"]) {
    room.on(type, (e) => room.seen.push({ type, peer: e && (e.id ?? (e.peer && (e.peer.id ?? e.peer))), e }));
  }
  room.on("message", ({ peer, data }) => room.got.push(`${peer.id}:${data}`));
  return room;
}

const opened = (room, id) => room.seen.some((e) => e.type === "open" && e.peer === id);
const errors = (room) => room.seen.filter((e) => e.type === "error").map((e) => e.e);

test("two clients join a room: each sees the other, the newcomer offers, the data channel carries both ways", async (t) => {
  const server = new FakeServer();
  server.iceServers = [{ urls: ["stun:stun.example.org:3478"] }];
  const a = record(await client(t, server).rtc.join("room:a"));
  assert.equal(a.peers.size, 0, "alone at first");
  assert.equal(typeof a.client, "string");
  assert.deepEqual(a.iceServers, server.iceServers);

  const b = record(await client(t, server).rtc.join("room:a"));
  assert.deepEqual([...b.peers.keys()], [a.client], "b starts with a, from `members`");
  await waitFor(() => a.peers.has(b.client), 1000, "a makes a peer for b on its join");
  assert.deepEqual(a.seen.filter((e) => e.type === "peer").map((e) => e.peer), [b.client]);

  await waitFor(() => opened(a, b.client) && opened(b, a.client), 2000, "both data channels open");
  const pa = a.peers.get(b.client);
  const pb = b.peers.get(a.client);
  assert.deepEqual(pa.pc.config.iceServers, server.iceServers, "the server's ICE servers, unchanged");
  assert.notEqual(pa.polite, pb.polite, "exactly one end is polite");
  assert.equal(pa.polite, a.client < b.client);
  // Both ends have the negotiated channel, so both wanted to offer; the
  // newcomer did, and a waited for it: no crossing offers on a first contact.
  assert.deepEqual([pa.pc.offers, pb.pc.offers], [0, 1]);
  assert.equal(pa.pc.signalingState, "stable");
  assert.equal(pb.pc.signalingState, "stable");
  assert.deepEqual(errors(a), []);
  assert.deepEqual(errors(b), []);

  assert.equal(a.send("hello b"), 1);
  assert.equal(pb.send("hello a"), true);
  await waitFor(() => a.got.length === 1 && b.got.length === 1, 1000, "one message each way");
  assert.deepEqual(a.got, [`${b.client}:hello a`]);
  assert.deepEqual(b.got, [`${a.client}:hello b`]);
  assert.ok(server.signals.every((s) => s.via === "ws" && s.room === "room:a"));
  assert.ok(server.signals.some((s) => s.data.candidate === null), "the end of candidates is signaled");
});

test("over SSE, signals go by POST /command with from and client_key; the SSE stream hands over `signal` events", async (t) => {
  const server = new FakeServer();
  const ws = record(await client(t, server, { transports: ["websocket"] }).rtc.join("room:mixed"));
  const ssePg = client(t, server, { transports: ["sse"] });
  const sse = record(await ssePg.rtc.join("room:mixed"));
  assert.equal(ssePg.transport, "sse");
  await waitFor(() => opened(ws, sse.client) && opened(sse, ws.client), 2000, "data channels open");

  const posts = server.log.filter((l) => l.startsWith("POST /command") && l.includes('"signal"')).map((l) => JSON.parse(l.slice(l.indexOf("{"))));
  assert.ok(posts.length > 0, "signals went by POST /command");
  for (const p of posts) {
    assert.equal(p.from, sse.client);
    assert.equal(p.client_key, `key-${sse.client}`);
    assert.equal(p.to, ws.client);
    assert.equal(p.room, "room:mixed");
  }
  assert.ok(server.signals.some((s) => s.via === "http" && s.from === sse.client));
  assert.ok(server.signals.some((s) => s.via === "ws" && s.to === sse.client), "and the SSE client received signals");
  assert.ok(!server.commands.some((c) => c.type === "signal" && ("from" in c || "client_key" in c)), "a WebSocket signal names no sender");
  sse.send("x");
  await waitFor(() => ws.got.length === 1);
  assert.deepEqual([...errors(ws), ...errors(sse)], []);
});

test("the NDJSON stream and the iframe carry room frames too", async (t) => {
  const page = fakePage();
  const server = new FakeServer();
  const opts = { ...FAST, EventSource: server.EventSource, fetch: server.fetch, RTCPeerConnection: FakeRTCPeerConnection };
  const pgs = [new Pushgate(server.base, { ...opts, transports: ["stream"] }), new Pushgate(server.base, { ...opts, transports: ["iframe"] })];
  try {
    const first = record(await pgs[0].rtc.join("room:s"));
    const second = record(await pgs[1].rtc.join("room:s"));
    await waitFor(() => opened(first, second.client) && opened(second, first.client), 2000, "data channels open");
    assert.ok(server.signals.length > 0 && server.signals.every((s) => s.via === "http"));
  } finally {
    for (const pg of pgs) pg.close();
    page.remove();
  }
});

test("a member that leaves is closed and removed; a late signal from it does not bring it back", async (t) => {
  const server = new FakeServer();
  const a = record(await client(t, server).rtc.join("room:l"));
  const b = record(await client(t, server).rtc.join("room:l"));
  const bId = b.client;
  await waitFor(() => opened(a, bId), 2000, "open");
  const peer = a.peers.get(bId);
  b.leave();
  assert.equal(b.peers.size, 0);
  assert.equal(b.left, true);
  assert.equal(b.client, null, "no longer a member");
  await waitFor(() => a.seen.some((e) => e.type === "leave"), 1000, "a sees b leave");
  assert.equal(a.peers.has(bId), false);
  assert.equal(peer.closed, true);
  assert.equal(peer.closeReason, "left");
  assert.equal(peer.pc.signalingState, "closed");
  assert.equal(a.seen.filter((e) => e.type === "leave")[0].e, peer, "the event carries the peer");

  const ws = [...server.sockets].find((s) => s.client === a.client);
  ws._frame({ type: "signal", room: "room:l", from: bId, user: null, data: { candidate: null } });
  // Barrier: frames are handled in order, so once a signal from a newcomer
  // has made its peer, the late one from b has been handled too.
  ws._frame({ type: "signal", room: "room:l", from: "77", user: null, data: { candidate: null } });
  await waitFor(() => a.peers.has("77"), 1000, "the newcomer's peer");
  assert.equal(a.peers.has(bId), false, "a gone member stays gone");
});

test("a signal from a member whose join has not arrived makes its peer", async (t) => {
  const server = new FakeServer();
  const a = record(await client(t, server).rtc.join("room:lazy"));
  const ws = [...server.sockets][0];
  ws._frame({ type: "signal", room: "room:lazy", from: "99", user: "zoe", data: { candidate: null } });
  await waitFor(() => a.peers.has("99"), 1000, "peer 99");
  assert.equal(a.peers.get("99").user, "zoe");
  assert.deepEqual(a.seen.filter((e) => e.type === "peer").map((e) => e.peer), ["99"]);
  // Its join, arriving after, adds nothing.
  ws._frame({ type: "join", channel: "room:lazy", user: "zoe", client: "99" });
  ws._frame({ type: "leave", channel: "room:lazy", user: "zoe", client: "99" });
  await waitFor(() => !a.peers.has("99"), 1000, "removed on leave");
  assert.equal(a.seen.filter((e) => e.type === "peer").length, 1);
});

test("a third member joins a room of two: all three pairs connect", async (t) => {
  const server = new FakeServer();
  const rooms = [];
  for (let i = 0; i < 3; i++) rooms.push(record(await client(t, server).rtc.join("room:mesh")));
  for (const r of rooms) {
    for (const o of rooms) if (o !== r) await waitFor(() => opened(r, o.client), 2000, `${r.client} → ${o.client}`);
    assert.equal(r.peers.size, 2);
    assert.deepEqual(errors(r), []);
  }
  rooms[2].send("from the third");
  await waitFor(() => rooms[0].got.length === 1 && rooms[1].got.length === 1);
});

test("a new connection (new client id) rebuilds the mesh; the others see the old id leave and the new one join", async (t) => {
  const server = new FakeServer();
  const a = record(await client(t, server).rtc.join("room:r"));
  const b = record(await client(t, server).rtc.join("room:r"));
  await waitFor(() => opened(a, b.client) && opened(b, a.client), 2000, "open");
  const oldA = a.client;
  const oldPeer = a.peers.get(b.client);
  // a's socket drops; b's stays.
  [...server.sockets].find((s) => s.client === oldA)._closed(1006);
  await waitFor(() => a.client !== oldA, 2000, "a has a new id");
  assert.equal(oldPeer.closed, true);
  assert.equal(oldPeer.closeReason, "reconnect");
  assert.deepEqual(a.seen.filter((e) => e.type === "rejoin").map((e) => e.e.client), [a.client]);
  await waitFor(() => !b.peers.has(oldA) && b.peers.has(a.client), 1000, "b follows");
  await waitFor(() => opened(a, b.client) && a.seen.filter((e) => e.type === "open").length === 2, 2000, "a reconnects to b");
  await waitFor(() => opened(b, a.client), 2000, "b reconnects to a");
  assert.deepEqual([...a.peers.keys()], [b.client]);
  a.send("again");
  await waitFor(() => b.got.includes(`${a.client}:again`));
});

test("perfect negotiation: both ends offer at once (media on both sides); the polite end yields, the impolite one ignores, both get the other's tracks", async (t) => {
  const server = new FakeServer();
  const a = record(await client(t, server).rtc.join("room:glare"));
  const b = record(await client(t, server).rtc.join("room:glare"));
  await waitFor(() => opened(a, b.client) && opened(b, a.client), 2000, "open");
  const pa = a.peers.get(b.client);
  const pb = b.peers.get(a.client);
  const offers = [pa.pc.offers, pb.pc.offers];
  // In the same tick: both fire negotiationneeded, both offer.
  await Promise.all([a.setMedia(fakeStream(["video"])), b.setMedia(fakeStream(["video"]))]);
  await waitFor(() => a.seen.some((e) => e.type === "track") && b.seen.some((e) => e.type === "track"), 2000, "tracks both ways");
  assert.ok(pa.pc.offers > offers[0] && pb.pc.offers > offers[1], "both offered");
  const [polite, impolite] = pa.polite ? [pa, pb] : [pb, pa];
  assert.equal(polite.pc.rollbacks, 1, "the polite end rolled its offer back and answered");
  assert.equal(impolite.pc.rollbacks, 0, "the impolite end kept its offer");
  await waitFor(() => pa.pc.signalingState === "stable" && pb.pc.signalingState === "stable", 1000, "stable");
  assert.deepEqual([...errors(a), ...errors(b)], [], "the candidates of the ignored offer are dropped quietly");
});

test("the newcomer without anything to send still opens: the member's media reaches it", async (t) => {
  const server = new FakeServer();
  const media = fakeStream(["video"]);
  const sender = record(await client(t, server).rtc.join("room:viewer", { media }));
  const viewer = record(await client(t, server).rtc.join("room:viewer", { dataChannel: false }));
  await waitFor(() => viewer.seen.some((e) => e.type === "track"), 2000, "the viewer gets the sender's track");
  assert.equal(viewer.peers.get(sender.client).stream, media);
  assert.equal(viewer.peers.get(sender.client).channel, null);
  assert.deepEqual([...errors(sender), ...errors(viewer)], []);
});

test("a failed connection restarts ICE: a new offer, and it connects again", async (t) => {
  const server = new FakeServer();
  const a = record(await client(t, server).rtc.join("room:ice"));
  const b = record(await client(t, server).rtc.join("room:ice"));
  await waitFor(() => opened(a, b.client) && opened(b, a.client), 2000, "open");
  const pc = a.peers.get(b.client).pc;
  const offers = pc.offers;
  const signals = server.signals.length;
  pc.fail();
  await waitFor(() => pc.offers > offers && pc.connectionState === "connected", 2000, "restarted and connected");
  assert.ok(server.signals.slice(signals).some((s) => s.data.description && s.data.description.type === "offer"));
  assert.ok(a.seen.some((e) => e.type === "state" && e.e.state === "failed"));
  assert.deepEqual([...errors(a), ...errors(b)], []);
});

test("rooms need a held connection: join on poll or longpoll rejects", async (t) => {
  const server = new FakeServer();
  const onlyPolls = client(t, server, { transports: ["longpoll", "poll"] });
  await assert.rejects(onlyPolls.rtc.join("room:p"), (err) => err.code === "unavailable" && /held connection/.test(err.message));

  const onPoll = client(t, server, { transports: ["poll", "websocket"] });
  onPoll.subscribe("x", () => {});
  await waitFor(() => onPoll.transport === "poll", 1000, "on poll");
  await assert.rejects(onPoll.rtc.join("room:p"), (err) => err.code === "unavailable" && /not poll/.test(err.message));

  // Still connecting: the join waits, then fails when the poll wins.
  const later = client(t, server, { transports: ["longpoll", "websocket"] });
  await assert.rejects(later.rtc.join("room:p"), (err) => err.code === "unavailable" && /longpoll/.test(err.message));
  assert.equal(server.members("room:p").length, 0);
});

test("a channel that is not a room, a second join, a closed client: clear refusals", async (t) => {
  const server = new FakeServer();
  const pg = client(t, server);
  await assert.rejects(pg.rtc.join("chat"), (err) => err.code === "bad_request" && /not a room/.test(err.message));
  await waitFor(() => server.commands.some((c) => c.type === "unsubscribe" && c.channel === "chat"), 1000, "unsubscribed again");
  await assert.rejects(pg.rtc.join("bad name"), TypeError);

  const room = await pg.rtc.join("room:once");
  await assert.rejects(pg.rtc.join("room:once"), (err) => err.code === "bad_request" && /already/.test(err.message));
  room.leave();
  const again = await pg.rtc.join("room:once");
  assert.equal(again.left, false);

  const closing = client(t, server, { autoConnect: false });
  const pending = closing.rtc.join("room:c");
  closing.close();
  await assert.rejects(pending, (err) => err.code === "closed");

  const noRtc = client(t, server, { RTCPeerConnection: null });
  await assert.rejects(noRtc.rtc.join("room:x"), (err) => err.code === "unavailable");
});

test("joining a room the application already subscribed to starts from the membership", async (t) => {
  const server = new FakeServer();
  const other = await client(t, server).rtc.join("room:pre");
  const pg = client(t, server);
  pg.subscribe("room:pre", () => {});
  await waitFor(() => pg._memberships.has("room:pre"), 1000, "subscribed");
  const room = await pg.rtc.join("room:pre");
  assert.deepEqual([...room.peers.keys()], [other.client]);
});

test("media: tracks go to every peer and arrive as `track`; a stream the caller passed is not stopped, one the room got is", async (t) => {
  const server = new FakeServer();
  const mine = fakeStream();
  const a = record(await client(t, server).rtc.join("room:m", { media: mine }));
  assert.equal(a.localStream, mine);
  const got = fakeStream(["video"]);
  const saved = Object.getOwnPropertyDescriptor(globalThis, "navigator");
  Object.defineProperty(globalThis, "navigator", {
    value: { mediaDevices: { getUserMedia: async (c) => ((got.asked = c), got) } },
    configurable: true,
    writable: true,
  });
  t.after(() => (saved ? Object.defineProperty(globalThis, "navigator", saved) : delete globalThis.navigator));
  const b = record(await client(t, server).rtc.join("room:m", { media: true }));
  assert.deepEqual(got.asked, { audio: true, video: true });
  await waitFor(() => b.seen.filter((e) => e.type === "track").length === 2, 2000, "b gets a's two tracks");
  await waitFor(() => a.seen.some((e) => e.type === "track"), 2000, "a gets b's track");
  const track = b.seen.find((e) => e.type === "track").e;
  assert.equal(track.peer.id, a.client);
  assert.equal(track.stream, mine, "the sender's stream");
  assert.equal(b.peers.get(a.client).stream, mine);
  const streams = b.seen.filter((e) => e.type === "stream");
  assert.equal(streams.length, 1, "one stream event for a's stream of two tracks");
  assert.equal(streams[0].e.stream, mine);
  assert.ok(b.seen.indexOf(streams[0]) < b.seen.findIndex((e) => e.type === "track"), "stream comes before its tracks");

  a.leave();
  b.leave();
  assert.ok(mine.getTracks().every((tr) => !tr.stopped), "the caller's stream is the caller's");
  assert.ok(got.getTracks().every((tr) => tr.stopped), "the room's own stream is stopped");
});

test("setMedia adds tracks to a joined room's peers, which renegotiate", async (t) => {
  const server = new FakeServer();
  const a = record(await client(t, server).rtc.join("room:sm"));
  const b = record(await client(t, server).rtc.join("room:sm"));
  await waitFor(() => opened(a, b.client) && opened(b, a.client), 2000, "open");
  const stream = fakeStream(["video"]);
  await a.setMedia(stream);
  await waitFor(() => b.seen.some((e) => e.type === "track"), 2000, "b gets the new track");
  await a.setMedia(null);
  assert.equal(a.localStream, null);
  assert.deepEqual([...errors(a), ...errors(b)], []);
});

test("a refused room subscription rejects the join", async (t) => {
  const server = new FakeServer();
  server.refuseSubscribe = true;
  const pg = client(t, server);
  await assert.rejects(pg.rtc.join("room:no"), (err) => err.code === "forbidden");
});

test("while in a room the client does not upgrade its transport (a new connection would rebuild every peer); after leaving it does", async (t) => {
  const server = new FakeServer();
  server.wsMode = "refuse";
  const pg = client(t, server, { transports: ["websocket", "sse"], upgradeInterval: 20 });
  const room = await pg.rtc.join("room:up");
  assert.equal(pg.transport, "sse");
  server.wsMode = "ok";
  const wsTries = () => server.log.filter((l) => l.startsWith("ws ")).length;
  const before = wsTries();
  // Count the upgrade timer's turns through the room check.
  let declined = 0;
  const inRoom = pg._inRoom.bind(pg);
  pg._inRoom = () => {
    const yes = inRoom();
    if (yes) declined++;
    return yes;
  };
  await waitFor(() => declined >= 3, 2000, "three upgrade turns");
  assert.equal(wsTries(), before, "no WebSocket tried while in the room");
  room.leave();
  await waitFor(() => pg.transport === "websocket", 2000, "upgraded after leaving");
});
