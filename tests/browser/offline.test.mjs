// Publishes made while offline are queued and sent in order on reconnect,
// each promise resolving with the server's reply.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startServer, launch, clientPage } from "./harness.mjs";
import { openClient, received } from "./page-helpers.mjs";
import { until } from "./harness.mjs";

let server, browser;
before(async () => { server = await startServer({ args: ["--no-demo"] }); browser = await launch(); });
after(async () => { await browser?.close(); await server?.stop(); });

for (const transport of ["websocket", "sse"]) {
  test(`${transport}: the offline queue flushes in order`, async () => {
    const page = await clientPage(browser, server.url);
    const channel = `offline-${transport}`;
    await openClient(page, channel, { transports: [transport], minDelay: 50, maxDelay: 200 });
    await page.context().setOffline(true);
    await until(page, () => window.pg.state === "offline");
    await page.evaluate((ch) => {
      window.replies = Promise.all([1, 2, 3].map((n) => window.pg.publish(ch, { n })));
    }, channel);
    assert.equal(await page.evaluate(() => window.pg.pending), 3);
    await page.context().setOffline(false);
    const replies = await page.evaluate(() => window.replies);
    assert.deepEqual(replies.map((r) => r.offset), [1, 2, 3], "sent in order, each resolved with its reply");
    const got = await received(page, 3);
    assert.deepEqual(got.map((m) => m.data.n), [1, 2, 3]);
    assert.equal(await page.evaluate(() => window.pg.pending), 0);
    await page.close();
  });
}
