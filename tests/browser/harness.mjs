// Shared by the browser tests: start the real pushgate binary on a loopback
// port, and a real headless Chromium (Debian's package) driven by playwright-core.

import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
export const BIN = process.env.PUSHGATE_BIN || join(root, "target", "release", "pushgate");
export const ARTIFACTS = join(root, "target", "browser-artifacts");

/**
 * Starts `pushgate serve` and resolves once it listens. `port` 0 picks a
 * free one (read back from the startup log).
 */
export async function startServer({ port = 0, args = [], tls = false } = {}) {
  if (!existsSync(BIN)) throw new Error(`${BIN} is missing: run cargo build --release first`);
  const proc = spawn(BIN, ["serve", "--listen", `127.0.0.1:${port}`, ...args], {
    stdio: ["ignore", "ignore", "pipe"],
    env: { ...process.env, RUST_LOG: "info", NO_COLOR: "1" },
  });
  let log = "";
  const listening = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("pushgate did not start within 20 s:\n" + log)), 20_000);
    proc.stderr.setEncoding("utf8");
    proc.stderr.on("data", (chunk) => {
      log += chunk;
      const m = log.match(/pushgate listening addr=127\.0\.0\.1:(\d+)/);
      if (m) { clearTimeout(timer); resolve(Number(m[1])); }
    });
    proc.on("exit", (code) => { clearTimeout(timer); reject(new Error(`pushgate exited (${code}):\n${log}`)); });
  });
  const actualPort = await listening;
  const exited = new Promise((resolve) => proc.on("exit", resolve));
  return {
    port: actualPort,
    url: `${tls ? "https" : "http"}://127.0.0.1:${actualPort}`,
    proc,
    log: () => log,
    /** Ends the process (by its PID) and waits for it. */
    async stop(signal = "SIGTERM") {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
      await exited;
    },
  };
}

/** POST /api/publish from the test (loopback, so no key needed). */
export async function publish(url, channel, data, event) {
  const res = await fetch(`${url}/api/publish`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(event ? { channel, data, event } : { channel, data }),
  });
  if (!res.ok) throw new Error(`publish answered ${res.status}: ${await res.text()}`);
  return res.json();
}

const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";

/** A headless Chromium with the flags that work on these machines, and `extra`. */
export async function launch(extra = []) {
  // playwright gives the browser a fresh temporary profile of its own.
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
      ...extra,
    ],
  });
}

/**
 * A page on the server's origin with pushgate.js loaded as `window.pushgateModule`.
 * `/healthz` is a tiny same-origin document; the client is imported into it.
 */
export async function clientPage(browser, url, { init } = {}) {
  const page = await browser.newPage();
  page.on("pageerror", (e) => console.error("page error:", e));
  if (init) await page.addInitScript(init);
  await page.goto(`${url}/healthz`);
  await page.evaluate(async () => { window.pushgateModule = await import("/pushgate.js"); });
  return page;
}

/** Resolves with `fn()`'s value once it is truthy, polling the page (bounded). */
export async function until(page, fn, arg, timeout = 15_000) {
  const handle = await page.waitForFunction(fn, arg, { timeout, polling: 50 });
  return handle.jsonValue();
}
