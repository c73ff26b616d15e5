// The demo over https in a real Chromium: every transport's clock ticks,
// and the page's HTTP requests (SSE, NDJSON, long-poll, poll, iframe, the
// page and script themselves) share ONE HTTP/2 connection, counted on the
// server's side in /metrics. The certificate is self-signed, made here with
// openssl, and Chromium is told to accept it.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startServer, launch } from "./harness.mjs";

let server, browser, dir;
before(async () => {
  dir = mkdtempSync(join(tmpdir(), "pushgate-tls-"));
  execFileSync("openssl", [
    "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
    "-keyout", join(dir, "key.pem"), "-out", join(dir, "cert.pem"), "-days", "1",
    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
  ], { stdio: "ignore" });
  server = await startServer({
    tls: true,
    args: ["--tls-cert", join(dir, "cert.pem"), "--tls-key", join(dir, "key.pem")],
  });
  browser = await launch(["--ignore-certificate-errors"]);
});
after(async () => {
  await browser?.close();
  await server?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** A series' value in the Prometheus text. */
function metric(text, series) {
  const line = text.split("\n").find((l) => l.startsWith(series + " "));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

test("https: the demo's transports all deliver, over one HTTP/2 connection", async () => {
  const page = await browser.newPage();
  await page.goto(server.url + "/");
  assert.equal(await page.evaluate(() => location.protocol), "https:");
  const transports = ["websocket", "sse", "stream", "longpoll", "poll", "iframe"];
  for (const t of transports) {
    await page.waitForFunction((t) => {
      const card = document.querySelector(`.clock[data-transport="${t}"]`);
      return card && Number(card.dataset.offset) > 0 && card.querySelector(".state").classList.contains("connected");
    }, t, { timeout: 20_000 });
  }
  // Each clock moves on: live delivery, not just the catch-up.
  const offsets = await page.$$eval(".clock", (cs) => cs.map((c) => Number(c.dataset.offset)));
  await page.waitForFunction((before) => {
    const now = [...document.querySelectorAll(".clock")].map((c) => Number(c.dataset.offset));
    return now.every((o, i) => o > before[i]);
  }, offsets, { timeout: 20_000 });
  // How the page was served: HTTP/2 for what is HTTP, one connection.
  const protocol = await page.evaluate(() => performance.getEntriesByType("navigation")[0].nextHopProtocol);
  assert.equal(protocol, "h2");
  const text = await page.evaluate(async () => (await fetch("/metrics")).text());
  assert.equal(metric(text, 'pushgate_http_connections_total{protocol="h2"}'), 1, text);
  assert.equal(metric(text, 'pushgate_http_connections{protocol="h2"}'), 1, text);
  // WebSockets are HTTP/1.1 over TLS (RFC 8441 is not offered): one per socket.
  const ws = metric(text, 'pushgate_connections{transport="ws"}');
  assert.ok(ws >= 1, text);
  assert.equal(metric(text, 'pushgate_http_connections{protocol="http1_tls"}'), ws, text);
  await page.close();
});
