// With WebSocket failing, pushgate.js falls back to SSE and still receives.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startServer, launch, clientPage, publish } from "./harness.mjs";
import { openClient, received } from "./page-helpers.mjs";

let server, browser;
before(async () => { server = await startServer({ args: ["--no-demo"] }); browser = await launch(); });
after(async () => { await browser?.close(); await server?.stop(); });

// A WebSocket whose connection fails at once, as behind a proxy that refuses upgrades.
const refusingWebSocket = () => {
  window.WebSocket = class {
    constructor() { this.readyState = 0; setTimeout(() => { this.readyState = 3; this.onerror?.(new Event("error")); this.onclose?.({ code: 1006 }); }, 10); }
    send() {} close() {}
  };
};

// A WebSocket that opens, then is cut before any frame arrives (a proxy that
// accepts the upgrade and drops the connection).
const cuttingWebSocket = () => {
  const Real = window.WebSocket;
  window.WebSocket = class extends Real {
    constructor(...args) {
      super(...args);
      this.addEventListener("open", () => super.close(), { once: true });
    }
  };
};

for (const [name, init] of [["refused", refusingWebSocket], ["cut after open", cuttingWebSocket]]) {
  test(`websocket ${name}: falls back to sse and receives`, async () => {
    const page = await clientPage(browser, server.url, { init });
    const channel = `fb-${name.replace(/\W/g, "")}`;
    await openClient(page, channel, { openTimeout: 2000, minDelay: 50, maxDelay: 200 });
    assert.equal(await page.evaluate(() => window.pg.transport), "sse");
    const tried = await page.evaluate(() => window.t.states.filter((s) => s.state === "connecting").map((s) => s.transport));
    assert.equal(tried[0], "websocket", "WebSocket was tried first");
    await publish(server.url, channel, "after fallback");
    const got = await received(page, 1);
    assert.equal(got[0].data, "after fallback");
    await page.close();
  });
}
