// The server is killed and restarted mid-stream: the client reconnects with
// backoff and, since an in-memory server loses its history (a new epoch),
// the app sees a `reset` and then the new messages — exactly as documented.

import { test, after } from "node:test";
import assert from "node:assert/strict";
import { startServer, launch, clientPage, publish } from "./harness.mjs";
import { openClient, received } from "./page-helpers.mjs";
import { until } from "./harness.mjs";

let server, browser;
after(async () => { await browser?.close(); await server?.stop(); });

test("restart: reconnect with backoff, then reset and live messages", async () => {
  server = await startServer({ args: ["--no-demo"] });
  browser = await launch();
  const port = server.port;
  const page = await clientPage(browser, server.url);
  await openClient(page, "restart", { transports: ["websocket"], minDelay: 100, maxDelay: 1000 });
  await publish(server.url, "restart", "before");
  await received(page, 1);

  await server.stop("SIGKILL");
  const reconnecting = await until(page, () => window.t.states.filter((s) => s.state === "reconnecting").length >= 2 && window.t.states.filter((s) => s.state === "reconnecting"));
  assert.ok(reconnecting[0].delay >= 0 && reconnecting[0].delay <= 100 * 2, `first delay within the jitter range: ${reconnecting[0].delay}`);
  assert.ok(reconnecting[1].attempt > reconnecting[0].attempt, "attempts count up");

  server = await startServer({ port, args: ["--no-demo"] });
  await until(page, () => window.t.resets.length === 1);
  await publish(server.url, "restart", "after");
  const got = await received(page, 3);
  assert.equal(got[0].data, "before");
  assert.equal(got[1].reset, true, "a reset before anything of the new epoch");
  assert.equal(got[2].data, "after");
  assert.notEqual(got[2].epoch, got[0].epoch, "the restarted server has a new epoch");
  await page.close();
});

test("dropped connection, same server: full resume, nothing lost or repeated", async () => {
  server ??= await startServer({ args: ["--no-demo"] });
  browser ??= await launch();
  const page = await clientPage(browser, server.url);
  await openClient(page, "resume", { transports: ["websocket"], minDelay: 50, maxDelay: 200 });
  await publish(server.url, "resume", 1);
  await received(page, 1);
  // Cut the network under the page, publish meanwhile, restore it.
  const context = page.context();
  await context.setOffline(true);
  await until(page, () => window.pg.state !== "connected");
  await publish(server.url, "resume", 2);
  await publish(server.url, "resume", 3);
  await context.setOffline(false);
  const got = await received(page, 3);
  assert.deepEqual(got.map((m) => m.data), [1, 2, 3]);
  assert.equal(await page.evaluate(() => window.t.resets.length), 0);
  await page.close();
});
