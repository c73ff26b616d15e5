// Every transport delivers published messages to pushgate.js in a real Chromium.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startServer, launch, clientPage, publish } from "./harness.mjs";
import { openClient, received } from "./page-helpers.mjs";

let server, browser;
before(async () => { server = await startServer({ args: ["--no-demo"] }); browser = await launch(); });
after(async () => { await browser?.close(); await server?.stop(); });

for (const transport of ["websocket", "sse", "stream", "longpoll", "poll", "iframe"]) {
  test(`${transport}: messages arrive in the page, in order, once`, async () => {
    const page = await clientPage(browser, server.url);
    const channel = `bt-${transport}`;
    await openClient(page, channel, { transports: [transport], pollInterval: 200 });
    assert.equal(await page.evaluate(() => window.pg.transport), transport);
    for (let i = 1; i <= 3; i++) await publish(server.url, channel, { n: i, html: "</script><b>" });
    const got = await received(page, 3);
    assert.deepEqual(got.map((m) => m.offset), [1, 2, 3]);
    assert.deepEqual(got.map((m) => m.data.n), [1, 2, 3]);
    assert.equal(got[0].data.html, "</script><b>", "data round-trips unchanged");
    // Sending goes over the transport itself (WebSocket) or POST /command.
    const reply = await page.evaluate((ch) => window.pg.publish(ch, { n: 4 }), channel);
    assert.equal(reply.type, "published");
    assert.equal(reply.offset, 4);
    const all = await received(page, 4);
    assert.deepEqual(all.map((m) => m.offset), [1, 2, 3, 4]);
    await page.close();
  });
}
