import { test } from "node:test";
import assert from "node:assert/strict";
import { PositionTracker } from "../pushgate.js";

const msg = (channel, epoch, offset) => ({ type: "message", channel, epoch, offset, data: offset });
const types = (out) => out.map((f) => `${f.type}:${f.epoch}.${f.offset}`);

test("subscribed sets a live start; messages in order are delivered", () => {
  const t = new PositionTracker();
  t.track("news");
  assert.deepEqual(t.accept({ type: "subscribed", channel: "news", epoch: "E", offset: 4 }), []);
  assert.equal(t.cursor(), "bmV3cw.E.4");
  assert.deepEqual(types(t.accept(msg("news", "E", 5))), ["message:E.5"]);
  assert.deepEqual(types(t.accept(msg("news", "E", 6))), ["message:E.6"]);
  assert.deepEqual(t.get("news"), { epoch: "E", offset: 6 });
});

test("duplicates (offset <= last, same epoch) are dropped", () => {
  const t = new PositionTracker();
  t.track("c", { epoch: "E", offset: 10 });
  assert.deepEqual(t.accept(msg("c", "E", 10)), []);
  assert.deepEqual(t.accept(msg("c", "E", 3)), []);
  assert.deepEqual(types(t.accept(msg("c", "E", 11))), ["message:E.11"]);
  assert.deepEqual(t.accept(msg("c", "E", 11)), []);
});

test("a hole yields a reset first, then the message", () => {
  const t = new PositionTracker();
  t.track("c", { epoch: "E", offset: 10 });
  const out = t.accept(msg("c", "E", 14));
  assert.deepEqual(types(out), ["reset:E.13", "message:E.14"]);
  assert.equal(out[0].channel, "c");
  assert.deepEqual(t.get("c"), { epoch: "E", offset: 14 });
});

test("a new epoch yields a reset first, then the message", () => {
  const t = new PositionTracker();
  t.track("c", { epoch: "E", offset: 10 });
  assert.deepEqual(types(t.accept(msg("c", "F", 1))), ["reset:F.0", "message:F.1"]);
  // and the old epoch's stragglers are then a new epoch again (never silently mixed)
  assert.deepEqual(types(t.accept(msg("c", "F", 2))), ["message:F.2"]);
});

test("a server reset moves the position and is passed on", () => {
  const t = new PositionTracker();
  t.track("c", { epoch: "E", offset: 10 });
  assert.deepEqual(types(t.accept({ type: "reset", channel: "c", epoch: "G", offset: 7 })), ["reset:G.7"]);
  assert.deepEqual(t.accept(msg("c", "G", 7)), []);
  assert.deepEqual(types(t.accept(msg("c", "G", 8))), ["message:G.8"]);
});

test("subscribed does not move a known position (the server resumes after it)", () => {
  const t = new PositionTracker();
  t.track("c", { epoch: "E", offset: 3 });
  t.accept({ type: "subscribed", channel: "c", epoch: "E", offset: 9 });
  assert.deepEqual(t.get("c"), { epoch: "E", offset: 3 });
  assert.deepEqual(types(t.accept(msg("c", "E", 4))), ["message:E.4"]);
});

test("the first message of a channel with no position is delivered without reset", () => {
  const t = new PositionTracker();
  t.track("c");
  assert.equal(t.cursor(), "", "unknown positions are left out of the cursor");
  assert.deepEqual(types(t.accept(msg("c", "E", 8))), ["message:E.8"]);
  assert.equal(t.cursor(), "Yw.E.8");
});

test("frames for untracked channels are ignored", () => {
  const t = new PositionTracker();
  assert.deepEqual(t.accept(msg("c", "E", 1)), []);
  assert.deepEqual(t.accept({ type: "reset", channel: "c", epoch: "E", offset: 1 }), []);
  t.track("c", { epoch: "E", offset: 1 });
  t.untrack("c");
  assert.deepEqual(t.accept(msg("c", "E", 2)), []);
  assert.equal(t.has("c"), false);
});

test("two overlapping streams (an upgrade) deliver each message once, in order", () => {
  const t = new PositionTracker();
  t.track("c", { epoch: "E", offset: 4 });
  const delivered = [];
  const feed = (m) => t.accept(m).forEach((f) => delivered.push(`${f.type}:${f.offset}`));
  // old stream continues 5, 6, 7; the new one opened with since=…4 replays 5.. and goes on
  const old = [5, 6, 7].map((o) => msg("c", "E", o));
  const neu = [5, 6, 7, 8, 9].map((o) => msg("c", "E", o));
  feed(old[0]);
  feed(neu[0]);
  feed(neu[1]);
  feed(old[1]);
  feed(old[2]);
  feed(neu[2]);
  feed(neu[3]);
  feed(neu[4]);
  assert.deepEqual(delivered, ["message:5", "message:6", "message:7", "message:8", "message:9"]);
});

test("learn() fills unknown positions only; cursor keeps subscription order", () => {
  const t = new PositionTracker();
  t.track("b");
  t.track("a", { epoch: "E", offset: 5 });
  t.learn("YQ.E.9~Yg.F.2");
  assert.deepEqual(t.get("a"), { epoch: "E", offset: 5 });
  assert.deepEqual(t.get("b"), { epoch: "F", offset: 2 });
  assert.equal(t.cursor(), "Yg.F.2~YQ.E.5");
  assert.equal(t.cursor(["a"]), "YQ.E.5");
});
