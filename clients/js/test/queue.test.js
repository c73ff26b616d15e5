import { test } from "node:test";
import assert from "node:assert/strict";
import { OfflineQueue, PushgateError } from "../pushgate.js";

/** A send() that answers asynchronously and records the order of calls. */
function recorder() {
  const sent = [];
  const send = (cmd) => {
    sent.push(cmd.n);
    return new Promise((resolve) => setTimeout(() => resolve({ ok: cmd.n }), 5 - (cmd.n % 3)));
  };
  return { sent, send };
}

test("waits while disconnected, then sends in order and resolves each in order", async () => {
  const q = new OfflineQueue({ max: 10 });
  const { sent, send } = recorder();
  q.flush(send);
  const resolved = [];
  const ps = [1, 2, 3, 4].map((n) => q.push({ n }).then((r) => resolved.push(r.ok)));
  assert.equal(q.size, 4);
  assert.equal(q.pending, 4);
  assert.deepEqual(sent, []);
  q.setConnected(true);
  await Promise.all(ps);
  assert.deepEqual(sent, [1, 2, 3, 4]);
  assert.deepEqual(resolved, [1, 2, 3, 4]);
  assert.equal(q.pending, 0);
});

test("window 1 keeps one command in flight at a time", async () => {
  const q = new OfflineQueue();
  let inFlight = 0;
  let most = 0;
  q.flush(async () => {
    inFlight++;
    most = Math.max(most, inFlight);
    await new Promise((r) => setTimeout(r, 2));
    inFlight--;
    return {};
  }, 1);
  q.setConnected(true);
  await Promise.all([1, 2, 3, 4, 5].map((n) => q.push({ n })));
  assert.equal(most, 1);
});

test("a larger window pipelines, still in order", async () => {
  const q = new OfflineQueue();
  const { sent, send } = recorder();
  q.flush(send, 3);
  [1, 2, 3, 4, 5].forEach((n) => q.push({ n }));
  assert.equal(q.inFlight, 0);
  q.setConnected(true);
  assert.equal(q.inFlight, 3);
  assert.deepEqual(sent, [1, 2, 3]);
});

test("the bound rejects the newest with queue_full", async () => {
  const q = new OfflineQueue({ max: 2 });
  const a = q.push({ n: 1 });
  const b = q.push({ n: 2 });
  await assert.rejects(q.push({ n: 3 }), (e) => e instanceof PushgateError && e.code === "queue_full");
  assert.equal(q.size, 2);
  q.flush(recorder().send);
  q.setConnected(true);
  assert.deepEqual(await Promise.all([a, b]), [{ ok: 1 }, { ok: 2 }]);
});

test("disabled: rejects at once with offline when disconnected, sends when connected", async () => {
  const q = new OfflineQueue({ enabled: false });
  await assert.rejects(q.push({ n: 1 }), { code: "offline" });
  q.flush(recorder().send);
  q.setConnected(true);
  assert.deepEqual(await q.push({ n: 2 }), { ok: 2 });
});

test("disabled: commands still waiting when the connection drops reject with offline", async () => {
  const q = new OfflineQueue({ enabled: false });
  q.flush(() => new Promise(() => {}), 1); // the first never answers
  q.setConnected(true);
  q.push({ n: 1 });
  const waiting = q.push({ n: 2 });
  q.setConnected(false);
  await assert.rejects(waiting, { code: "offline" });
});

test("a send that throws leaves the command queued for the next flush", async () => {
  const q = new OfflineQueue();
  q.flush(() => {
    throw new Error("socket not open");
  });
  q.setConnected(true);
  const p = q.push({ n: 7 });
  assert.equal(q.size, 1);
  q.flush(recorder().send);
  assert.deepEqual(await p, { ok: 7 });
});

test("server errors reject that command only", async () => {
  const q = new OfflineQueue();
  q.flush((cmd) => (cmd.n === 2 ? Promise.reject(new PushgateError("invalid_event", "no")) : Promise.resolve({ ok: cmd.n })));
  q.setConnected(true);
  const [a, b, c] = await Promise.allSettled([1, 2, 3].map((n) => q.push({ n })));
  assert.equal(a.status, "fulfilled");
  assert.equal(b.reason.code, "invalid_event");
  assert.deepEqual(c.value, { ok: 3 });
});

test("a new transport waits for the old one's in-flight commands (no overtaking)", async () => {
  const q = new OfflineQueue();
  const order = [];
  let releaseOld;
  q.flush((cmd) => {
    order.push(`old:${cmd.n}`);
    return new Promise((r) => (releaseOld = r));
  }, 4, "old");
  q.setConnected(true);
  q.push({ n: 1 });
  q.flush((cmd) => {
    order.push(`new:${cmd.n}`);
    return Promise.resolve({});
  }, 4, "new");
  const p2 = q.push({ n: 2 });
  assert.deepEqual(order, ["old:1"]);
  releaseOld({});
  await p2;
  assert.deepEqual(order, ["old:1", "new:2"]);
});

test("onchange reports the pending count; rejectWaiting empties the queue", async () => {
  const q = new OfflineQueue();
  const counts = [];
  q.onchange = (n) => counts.push(n);
  const ps = [q.push({ n: 1 }), q.push({ n: 2 })];
  q.rejectWaiting("closed", "bye");
  for (const p of ps) await assert.rejects(p, { code: "closed" });
  assert.deepEqual(counts, [1, 2, 0]);
});
