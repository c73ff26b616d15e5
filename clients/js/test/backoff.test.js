import { test } from "node:test";
import assert from "node:assert/strict";
import { backoffDelay } from "../pushgate.js";

const opts = { minDelay: 500, maxDelay: 30000 };
const almostOne = () => 0.999999;

test("the ceiling doubles from minDelay and stops at maxDelay", () => {
  const ceilings = [0, 1, 2, 3, 4, 5, 6, 7, 10, 60].map((a) => backoffDelay(a, opts, almostOne) + 1);
  assert.deepEqual(ceilings, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000]);
});

test("full jitter: random 0 gives 0, and every delay lies in [0, ceiling)", () => {
  assert.equal(backoffDelay(5, opts, () => 0), 0);
  for (let attempt = 0; attempt < 12; attempt++) {
    const ceiling = Math.min(30000, 500 * 2 ** attempt);
    for (let i = 0; i < 200; i++) {
      const d = backoffDelay(attempt, opts);
      assert.ok(Number.isInteger(d) && d >= 0 && d < ceiling, `attempt ${attempt}: ${d}`);
    }
  }
});

test("jitter spreads delays over the whole range", () => {
  const delays = Array.from({ length: 2000 }, () => backoffDelay(3, opts)); // ceiling 4000
  assert.ok(Math.min(...delays) < 400, "some delays near 0");
  assert.ok(Math.max(...delays) > 3600, "some delays near the ceiling");
});

test("attempt 0 (after a reset) is bounded by minDelay again", () => {
  assert.ok(backoffDelay(0, opts, almostOne) < 500);
});

test("defaults are 500 ms and 30 s; huge attempts do not overflow", () => {
  assert.equal(backoffDelay(0, undefined, almostOne), 499);
  assert.equal(backoffDelay(1e6, undefined, almostOne), 29999);
  assert.equal(backoffDelay(-3, undefined, almostOne), 499);
});

test("custom bounds", () => {
  assert.equal(backoffDelay(2, { minDelay: 100, maxDelay: 250 }, almostOne), 249);
  assert.equal(backoffDelay(1, { minDelay: 100, maxDelay: 250 }, almostOne), 199);
});
