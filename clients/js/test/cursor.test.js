import { test } from "node:test";
import assert from "node:assert/strict";
import { encodeCursor, decodeCursor, bytesToBase64, base64ToBytes, decodeBinaryFrame, isValidChannel } from "../pushgate.js";

test("one channel: the Rust format", () => {
  assert.equal(encodeCursor([["news", { epoch: "abc", offset: 42 }]]), "bmV3cw.abc.42");
});

test("the protocol.md example, two channels joined by ~", () => {
  const c = encodeCursor(
    new Map([
      ["news", { epoch: "Xk3_a9Qm2Lw", offset: 42 }],
      ["chat", { epoch: "Qm2Lw8x9a1Z", offset: 7 }],
    ]),
  );
  assert.equal(c, "bmV3cw.Xk3_a9Qm2Lw.42~Y2hhdA.Qm2Lw8x9a1Z.7");
});

test("empty cursor", () => {
  assert.equal(encodeCursor([]), "");
  assert.equal(decodeCursor("").size, 0);
});

test("base64url without padding, URL-safe alphabet (channels with + / = ? ~)", () => {
  // "a" → YQ (no padding); "ab" → YWI; bytes 0xfb 0xff give - and _ in url-safe
  assert.equal(encodeCursor([["a", { epoch: "e", offset: 0 }]]), "YQ.e.0");
  assert.equal(encodeCursor([["ab", { epoch: "e", offset: 1 }]]), "YWI.e.1");
  assert.equal(bytesToBase64(new Uint8Array([0xfb, 0xff]), true), "-_8");
  assert.equal(bytesToBase64(new Uint8Array([0xfb, 0xff])), "+/8=");
  const name = "a/b+c=d~e?"; // not all legal channel chars ('?' is not) — encoding only
  assert.equal(encodeCursor([[name, { epoch: "x", offset: 3 }]]), `${Buffer.from(name).toString("base64url")}.x.3`);
});

test("round trip over every legal channel character", () => {
  const names = ["news", "a", "user:42@example.com", "x/y=z+w#1$!~*", "A-Z_a.z", "z".repeat(255)];
  const entries = names.map((n, i) => [n, { epoch: `ep${i}_-X`, offset: i * 1000 }]);
  const text = encodeCursor(entries);
  assert.match(text, /^[A-Za-z0-9_.~-]+$/, "URL-unreserved characters only");
  for (const [n, p] of entries) assert.equal(text.includes(Buffer.from(n).toString("base64url")), true);
  assert.deepEqual([...decodeCursor(text)], entries);
});

test("agrees with Node's base64url for random channel names", () => {
  const chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-.:@/=+#$!~*";
  for (let i = 0; i < 500; i++) {
    const len = 1 + Math.floor(Math.random() * 40);
    const name = Array.from({ length: len }, () => chars[Math.floor(Math.random() * chars.length)]).join("");
    assert.ok(isValidChannel(name));
    assert.equal(encodeCursor([[name, { epoch: "e", offset: 1 }]]), `${Buffer.from(name).toString("base64url")}.e.1`);
  }
});

test("decode rejects malformed cursors with invalid_cursor", () => {
  for (const bad of ["x", "bmV3cw.abc", "bmV3cw.abc.-1", "bmV3cw.abc.01", "bmV3cw..1", "b+V3.abc.1", "bmV3cw.abc.1~bmV3cw.def.2", "IA.abc.1"]) {
    assert.throws(() => decodeCursor(bad), { code: "invalid_cursor" }, bad);
  }
});

test("base64 decoding of binary data, both alphabets, with and without padding", () => {
  const bytes = new Uint8Array(256).map((_, i) => i);
  const std = Buffer.from(bytes).toString("base64");
  assert.deepEqual(base64ToBytes(std), bytes);
  assert.deepEqual(base64ToBytes(Buffer.from(bytes).toString("base64url")), bytes);
  assert.equal(bytesToBase64(bytes), std);
  assert.deepEqual(base64ToBytes(""), new Uint8Array(0));
  assert.throws(() => base64ToBytes("a*b="));
});

test("WebSocket binary frames: JSON header, newline, raw bytes", () => {
  const header = Buffer.from('{"type":"message","channel":"photos","offset":3,"epoch":"e","encoding":"binary"}\n');
  const raw = Buffer.from([0, 10, 255, 10]); // raw bytes may contain newlines
  const frame = decodeBinaryFrame(new Uint8Array(Buffer.concat([header, raw])).buffer);
  assert.equal(frame.encoding, "binary");
  assert.equal(frame.offset, 3);
  assert.ok(frame.data instanceof Uint8Array);
  assert.deepEqual([...frame.data], [0, 10, 255, 10]);
});
