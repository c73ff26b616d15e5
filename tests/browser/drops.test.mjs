// Network drops on every transport: behind a proxy that resets connections
// or lets them die silently, pushgate.js notices, reconnects and resumes
// with nothing lost and nothing twice. The server's heartbeat is short
// (300 ms), so a dead connection is noticed in about a second; the test
// awaits the client's own events and never asserts a duration.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startServer, launch, clientPage, publish, until } from "./harness.mjs";
import { startDropProxy } from "./drop-proxy.mjs";
import { openClient, received } from "./page-helpers.mjs";

const TRANSPORTS = ["websocket", "sse", "stream", "iframe", "longpoll", "poll"];
const HEARTBEAT = "300ms";

let server, proxy, browser;
before(async () => {
  server = await startServer({
    args: ["--no-demo", "--ws-ping-interval", HEARTBEAT, "--stream-ping-interval", HEARTBEAT, "--iframe-ping-interval", HEARTBEAT, "--ws-idle-timeout", "3s"],
  });
  proxy = await startDropProxy({ target: { port: server.port } });
  browser = await launch();
});
after(async () => {
  await browser?.close();
  await proxy?.close();
  await server?.stop();
});

// Short waits everywhere, so that each case takes seconds: the long-poll is
// held 1 s (dead after 1 s + 1 s), a short poll is dead after openTimeout.
const OPTIONS = { openTimeout: 1500, minDelay: 100, maxDelay: 500, longpollTimeout: 1000, pollInterval: 200 };

/** How many times the client left `connected` so far. */
const drops = (page) => page.evaluate(() => window.t.states.filter((s) => s.state === "reconnecting").length);

for (const transport of TRANSPORTS) {
  for (const mode of ["reset", "dead"]) {
    test(`${transport}, ${mode}: the client notices, reconnects and resumes exactly`, async () => {
      const page = await clientPage(browser, proxy.url);
      const channel = `drop-${transport}-${mode}`;
      await openClient(page, channel, { ...OPTIONS, transports: [transport] });
      for (let i = 1; i <= 3; i++) await publish(server.url, channel, i);
      await received(page, 3);
      const before = await drops(page);

      // The network breaks; messages go on being published meanwhile.
      proxy.drop(mode);
      for (let i = 4; i <= 6; i++) await publish(server.url, channel, i);
      // The client sees the drop by itself: an RST, or (dead) the silence.
      await until(page, (n) => window.t.states.filter((s) => s.state === "reconnecting").length > n, before, 30_000);
      proxy.heal();
      for (let i = 7; i <= 8; i++) await publish(server.url, channel, i);

      const got = await received(page, 8, 30_000);
      assert.deepEqual(got.map((m) => m.data), [1, 2, 3, 4, 5, 6, 7, 8], "each message once, in order");
      assert.deepEqual(got.map((m) => m.offset), [1, 2, 3, 4, 5, 6, 7, 8]);
      assert.equal(await page.evaluate(() => window.t.resets.length), 0, "no reset: nothing was lost");
      await until(page, () => window.pg.state === "connected");
      await page.evaluate(() => window.pg.close());
      await page.close();
    });
  }
}

test("iframe: an RST in the middle of a document is noticed, and the next document resumes", async () => {
  const page = await clientPage(browser, proxy.url);
  const channel = "drop-iframe-middle";
  await openClient(page, channel, { ...OPTIONS, transports: ["iframe"] });
  // A document well under way: several scripts already run in it.
  for (let i = 1; i <= 5; i++) await publish(server.url, channel, { i, pad: "x".repeat(2000) });
  await received(page, 5);
  const before = await drops(page);
  proxy.drop("cut"); // RST both ways, reconnecting allowed at once
  await until(page, (n) => window.t.states.filter((s) => s.state === "reconnecting").length > n, before, 30_000);
  proxy.heal();
  for (let i = 6; i <= 7; i++) await publish(server.url, channel, { i });
  const got = await received(page, 7, 30_000);
  assert.deepEqual(got.map((m) => m.data.i), [1, 2, 3, 4, 5, 6, 7]);
  assert.equal(await page.evaluate(() => window.t.resets.length), 0);
  await page.evaluate(() => window.pg.close());
  await page.close();
});

test("iframe: a document that reaches its lifetime is replaced without a drop", async () => {
  const short = await startServer({ args: ["--no-demo", "--iframe-lifetime", "1s"] });
  try {
    const page = await clientPage(browser, short.url);
    const channel = "iframe-lifetime";
    await openClient(page, channel, { ...OPTIONS, transports: ["iframe"] });
    await publish(short.url, channel, 1);
    await received(page, 1);
    // Count documents: each lifetime end makes the client load a new one.
    await until(page, () => document.querySelectorAll("iframe").length >= 1);
    const firstSrc = await page.evaluate(() => document.querySelector("iframe").src);
    await until(page, (src) => document.querySelector("iframe") && document.querySelector("iframe").src !== src, firstSrc);
    await publish(short.url, channel, 2);
    const got = await received(page, 2);
    assert.deepEqual(got.map((m) => m.data), [1, 2]);
    const states = await page.evaluate(() => window.t.states.map((s) => s.state));
    assert.ok(!states.includes("reconnecting"), `no reconnect, only a reload: ${states}`);
    await page.evaluate(() => window.pg.close());
    await page.close();
  } finally {
    await short.stop();
  }
});
