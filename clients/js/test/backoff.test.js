import { test } from "node:test";
import assert from "node:assert/strict";
import { backoffDelay } from "../pushgate.js";

const opts = { minDelay: 1000, maxDelay: 30000, fastRetries: 4 };
const almostOne = () => 0.999999;
const ceiling = (attempt, o = opts) => backoffDelay(attempt, o, almostOne) + 1;

test("fastRetries attempts at minDelay, then the ceiling doubles and stops at maxDelay", () => {
  const ceilings = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 60].map((a) => ceiling(a));
  assert.deepEqual(ceilings, [1000, 1000, 1000, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000]);
});

test("the defaults are that schedule", () => {
  const ceilings = [0, 3, 4, 5, 7, 8].map((a) => backoffDelay(a, undefined, almostOne) + 1);
  assert.deepEqual(ceilings, [1000, 1000, 2000, 4000, 16000, 30000]);
});

test("fastRetries moves the first doubling", () => {
  assert.deepEqual([0, 1, 2, 3].map((a) => ceiling(a, { minDelay: 100, fastRetries: 1 })), [100, 200, 400, 800]);
  assert.deepEqual([0, 1, 2].map((a) => ceiling(a, { minDelay: 100, fastRetries: 2 })), [100, 100, 200]);
  // 0: no attempt is capped at minDelay, so attempt 0 is the first doubling
  assert.deepEqual([0, 1].map((a) => ceiling(a, { minDelay: 100, fastRetries: 0 })), [200, 400]);
  assert.equal(ceiling(0, { minDelay: 100, fastRetries: -5 }), 200, "negative is 0");
});

test("full jitter: random 0 gives 0, and every delay lies in [0, ceiling)", () => {
  assert.equal(backoffDelay(5, opts, () => 0), 0);
  for (let attempt = 0; attempt < 12; attempt++) {
    const c = ceiling(attempt);
    for (let i = 0; i < 200; i++) {
      const d = backoffDelay(attempt, opts);
      assert.ok(Number.isInteger(d) && d >= 0 && d < c, `attempt ${attempt}: ${d}`);
    }
  }
});

test("jitter spreads delays over the whole range", () => {
  const delays = Array.from({ length: 2000 }, () => backoffDelay(6, opts)); // ceiling 8000
  assert.ok(Math.min(...delays) < 800, "some delays near 0");
  assert.ok(Math.max(...delays) > 7200, "some delays near the ceiling");
});

test("attempt 0 (after a reset) is bounded by minDelay again", () => {
  assert.ok(backoffDelay(0, opts, almostOne) < 1000);
});

test("huge and negative attempts do not overflow", () => {
  assert.equal(backoffDelay(1e6, undefined, almostOne), 29999);
  assert.equal(backoffDelay(-3, undefined, almostOne), 999);
});

test("custom bounds", () => {
  assert.equal(backoffDelay(5, { minDelay: 100, maxDelay: 250 }, almostOne), 249);
  assert.equal(backoffDelay(4, { minDelay: 100, maxDelay: 250 }, almostOne), 199);
  assert.equal(backoffDelay(9, { minDelay: 100, maxDelay: 50 }, almostOne), 49, "maxDelay wins over minDelay");
});
