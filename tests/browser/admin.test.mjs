// The admin dashboard at /admin, in a real Chromium against the real binary
// (started with --admin, an API key and an auth secret): it loads without
// console errors, logs in with an admin token minted by `pushgate token
// --admin`, its charts move while a publisher runs, it lists the busiest
// channels and a channel's presence, and disconnecting a user closes that
// user's WebSocket and empties the list. A screenshot is kept as an
// artifact. The API refuses calls without a login, and the page returns to
// its login form, saying why, when a token is not an admin's.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BIN, ARTIFACTS, startServer, launch } from "./harness.mjs";

const KEY = "admin-test-api-key";
const SECRET = "an-admin-test-secret-of-at-least-32-bytes";
const CHANNEL = "chat:lobby";

let server, browser, dir, config;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "pushgate-admin-"));
  config = join(dir, "pushgate.toml");
  writeFileSync(config, [
    "[http]", `api_key = "${KEY}"`,
    "[auth]", `secret = "${SECRET}"`,
    "[namespaces.chat]", "presence = true",
  ].join("\n") + "\n");
  server = await startServer({ args: ["--config", config, "--admin"] });
  browser = await launch();
});

after(async () => {
  await browser?.close();
  await server?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** A token minted by the binary's `token` command, with the server's config. */
async function mint(...args) {
  const { stdout } = await promisify(execFile)(BIN, ["token", "--config", config, ...args]);
  return stdout.trim();
}

/** A page of the dashboard that records console errors and page errors. */
async function adminPage(viewport = { width: 1280, height: 1000 }) {
  const page = await browser.newPage({ viewport });
  page.errors = [];
  page.on("console", (m) => m.type() === "error" && page.errors.push(m.text()));
  page.on("pageerror", (e) => page.errors.push(String(e)));
  await page.goto(`${server.url}/admin`);
  return page;
}

async function logIn(page, credential) {
  await page.waitForSelector("#login-form", { state: "visible" });
  await page.fill("#credential", credential);
  await page.click("#login-form button");
}

/** A number a chart's legend shows for `series` (`latest` or `peak`). */
function legend(page, series, which) {
  return page.$eval(`[data-series="${series}"]`, (li, which) => Number(li.dataset[which] ?? NaN), which);
}

/** 200 publishes on CHANNEL through /api/publish, 10 at a time over about 2 s. */
async function runPublisher() {
  for (let round = 0; round < 20; round++) {
    await Promise.all(Array.from({ length: 10 }, async (_, i) => {
      const res = await fetch(`${server.url}/api/publish`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${KEY}` },
        body: JSON.stringify({ channel: CHANNEL, data: { round, i } }),
      });
      assert.equal(res.status, 200, await res.text());
    }));
    // Spread over several scrapes, so that the per-second rates see them.
    await new Promise((r) => setTimeout(r, 100));
  }
}

test("admin: the API refuses calls without a login", async () => {
  for (const [method, path] of [["GET", "/api/info"], ["GET", "/api/connections?user=alice"], ["POST", "/api/disconnect"]]) {
    const res = await fetch(server.url + path, { method, body: method === "POST" ? '{"user":"alice"}' : undefined });
    assert.equal(res.status, 401, `${method} ${path}`);
    const body = await res.json();
    assert.match(body.message, /api key/, `${method} ${path}: ${JSON.stringify(body)}`);
  }
  const page = await fetch(`${server.url}/admin`);
  assert.equal(page.status, 200);
  assert.match(page.headers.get("content-security-policy"), /script-src 'self'/);
});

test("admin: a token without the admin claim goes back to the login, saying why", async () => {
  const page = await adminPage();
  await logIn(page, await mint("--sub", "mallory", "--channels", "chat:*"));
  await page.waitForFunction(() => /not an admin token/.test(document.querySelector("#login-error").textContent));
  assert.equal(await page.isHidden("#dash"), true);
  await page.close();
});

test("admin: live charts, channels, presence, and disconnecting a user", async () => {
  const page = await adminPage();
  await logIn(page, await mint("--sub", "ops", "--admin"));
  await page.waitForSelector("#dash", { state: "visible" });
  // The login is kept for this tab only.
  assert.ok(await page.evaluate(() => sessionStorage.getItem("pushgate.admin.credential")));
  await page.waitForFunction(() => Number(document.querySelector('.chart[data-chart="rates"]').dataset.samples) >= 2);
  await page.waitForSelector("#nodes tbody tr.self");

  // A user's WebSocket, from another page of the server's origin.
  const alice = await mint("--sub", "alice", "--channels", "chat:*");
  const client = await browser.newPage();
  await client.goto(`${server.url}/healthz`);
  await client.evaluate(({ token, channel }) => new Promise((resolve, reject) => {
    const ws = new WebSocket(`${location.origin.replace("http", "ws")}/ws?token=${encodeURIComponent(token)}`);
    window.closeCode = null;
    window.received = 0;
    ws.onclose = (e) => { window.closeCode = e.code; };
    ws.onerror = () => reject(new Error("the WebSocket failed"));
    ws.onmessage = (e) => {
      const m = JSON.parse(e.data);
      if (m.type === "subscribed") resolve();
      if (m.type === "error") reject(new Error(e.data));
      if (m.type === "message") window.received += 1;
    };
    ws.onopen = () => ws.send(JSON.stringify({ type: "subscribe", channel }));
  }), { token: alice, channel: CHANNEL });

  await runPublisher();
  await client.waitForFunction(() => window.received === 200);
  // The charts moved: the rates rose with the publisher, the connection shows.
  await page.waitForFunction(() => {
    const peak = (s) => Number(document.querySelector(`[data-series="${s}"]`).dataset.peak ?? 0);
    return peak("published") >= 20 && peak("delivered") >= 20 && peak("ws") >= 1;
  });
  assert.ok(await legend(page, "published", "peak") >= 20);
  assert.equal(await legend(page, "dropped", "peak"), 0, "no slow consumer was dropped");
  // Delivery latency: quantiles once the server has the histogram, else "no data".
  const latency = await page.$eval('[data-series="p99"]', (li) => ({ peak: li.dataset.peak, shown: li.textContent }));
  assert.ok(latency.peak !== undefined ? Number(latency.peak) >= 0 : /no data/.test(latency.shown), JSON.stringify(latency));

  // The busiest channels list the lobby; a click shows its presence.
  await page.waitForSelector(`#channels tr[data-channel="${CHANNEL}"]`, { timeout: 15_000 });
  const subscribers = await page.$eval(`#channels tr[data-channel="${CHANNEL}"] td.num`, (td) => td.textContent);
  assert.equal(subscribers, "1");
  await page.click(`#channels tr[data-channel="${CHANNEL}"] button`);
  await page.waitForSelector('#presence li[data-user="alice"]');

  // Alice's connections, then the disconnect button (it asks once).
  await page.fill("#user-id", "alice");
  await page.click("#user-form button[type=submit]");
  await page.waitForSelector('#connections[data-count="1"]');
  const cells = await page.$$eval("#connections tbody td", (tds) => tds.map((td) => td.textContent));
  assert.equal(cells[0], "ws");
  assert.match(cells[3], /^127\.0\.0\.1:\d+$/);
  mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: join(ARTIFACTS, "admin.png"), fullPage: true });

  await page.click("#disconnect");
  await page.waitForFunction(() => /Really/.test(document.querySelector("#disconnect").textContent));
  await page.click("#disconnect");
  await client.waitForFunction(() => window.closeCode !== null);
  assert.equal(await client.evaluate(() => window.closeCode), 4003, "closed as disconnected");
  // Emptied: the table hides, and the note says so.
  await page.waitForFunction(() => document.querySelector("#connections").dataset.count === "0");
  assert.equal(await page.isHidden("#connections"), true);
  assert.match(await page.textContent("#connections-note"), /disconnected 1 connection of alice/);

  assert.deepEqual(page.errors, [], "no console errors");
  await client.close();
  await page.close();
});

test("admin: delivery latency quantiles from the histogram's buckets", async () => {
  // The page's arithmetic, on a histogram whose quantiles are known: /metrics
  // answers a fixed text, first with no observation, then with 100 of them
  // over two transports (60 in 0.5–1 ms, 39 in 2.5–5 ms, 1 in 50–100 ms).
  const les = ["0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf"];
  const cumulative = {
    ws: [0, 30, 30, 50, 50, 50, 50, 50, 50, 50, 50, 50, 50, 50, 50],
    sse: [0, 30, 30, 49, 49, 49, 49, 50, 50, 50, 50, 50, 50, 50, 50],
  };
  const text = (observed) => ["# TYPE pushgate_delivery_latency_seconds histogram",
    ...Object.entries(cumulative).flatMap(([t, counts]) => les.map((le, i) =>
      `pushgate_delivery_latency_seconds_bucket{transport="${t}",le="${le}"} ${observed ? counts[i] : 0}`)),
  ].join("\n") + "\n";
  let scrapes = 0;
  const page = await browser.newPage();
  await page.route("**/metrics", (route) => {
    scrapes += 1;
    route.fulfill({ status: 200, contentType: "text/plain; version=0.0.4", body: text(scrapes > 1) });
  });
  await page.goto(`${server.url}/admin`);
  await logIn(page, KEY);
  await page.waitForFunction(() => document.querySelector('[data-series="p99"]')?.dataset.latest !== undefined);
  const p50 = await legend(page, "p50", "latest");
  const p99 = await legend(page, "p99", "latest");
  assert.ok(Math.abs(p50 - 0.9167) < 0.001, `p50 ${p50} ms`);
  assert.ok(Math.abs(p99 - 5) < 0.001, `p99 ${p99} ms`);
  await page.close();
});

test("admin: fits a phone-sized screen", async () => {
  const page = await adminPage({ width: 375, height: 740 });
  await logIn(page, KEY);
  await page.waitForSelector("#dash", { state: "visible" });
  await page.waitForFunction(() => Number(document.querySelector('.chart[data-chart="rates"]').dataset.samples) >= 1);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `the page is ${overflow}px wider than the screen`);
  await page.screenshot({ path: join(ARTIFACTS, "admin-narrow.png"), fullPage: true });
  assert.deepEqual(page.errors, [], "no console errors");
  await page.close();
});
