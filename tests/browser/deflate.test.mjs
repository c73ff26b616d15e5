// permessage-deflate with Chromium's own WebSocket: negotiated without
// context takeover, large messages compressed both ways, small ones plain.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startServer, launch, clientPage, publish } from "./harness.mjs";

let server, browser;
before(async () => {
  server = await startServer({ args: ["--no-demo", "--ws-deflate"] });
  browser = await launch();
});
after(async () => { await browser?.close(); await server?.stop(); });

test("Chromium negotiates permessage-deflate and messages round-trip both ways", async () => {
  const page = await clientPage(browser, server.url);
  const extensions = await page.evaluate(async () => {
    const ws = new WebSocket(`ws://${location.host}/ws`);
    window.frames_ = [];
    ws.onmessage = (e) => window.frames_.push(JSON.parse(e.data));
    await new Promise((ok, fail) => { ws.onopen = ok; ws.onerror = fail; });
    window.ws_ = ws;
    ws.send(JSON.stringify({ type: "subscribe", channel: "deflate", id: 1 }));
    return ws.extensions;
  });
  assert.match(extensions, /^permessage-deflate/);
  assert.match(extensions, /server_no_context_takeover/);
  assert.match(extensions, /client_no_context_takeover/);
  const waitFor = (n) => page.waitForFunction((n) => window.frames_.length >= n, n);
  await waitFor(1);

  // From the server: a large message (compressed) and a small one (plain).
  const big = "pushgate ".repeat(2000);
  await publish(server.url, "deflate", { big });
  await publish(server.url, "deflate", { n: 2 });
  // From the page: Chromium compresses its own large frame.
  await page.evaluate((big) => window.ws_.send(JSON.stringify({
    type: "publish", channel: "deflate", id: 2, data: { big: big + "!" },
  })), big);
  await waitFor(5);
  const got = await page.evaluate(() => window.frames_);
  const messages = got.filter((m) => m.type === "message");
  assert.deepEqual(messages.map((m) => m.offset), [1, 2, 3]);
  assert.equal(messages[0].data.big, big);
  assert.equal(messages[1].data.n, 2);
  assert.equal(messages[2].data.big, big + "!");
  assert.ok(got.some((m) => m.type === "published" && m.id === 2), JSON.stringify(got.map((m) => m.type)));
  await page.close();
});
