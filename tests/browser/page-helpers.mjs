// In-page setup shared by the browser tests: one client, its states and
// messages recorded on `window`, promises to await instead of sleeping.

import { until } from "./harness.mjs";

/** Creates `window.pg` subscribed to `channel`, recording into `window.t`. */
export async function openClient(page, channel, options = {}) {
  await page.evaluate(({ channel, options }) => {
    const { Pushgate } = window.pushgateModule;
    const t = (window.t = { received: [], states: [], resets: [] });
    const pg = (window.pg = new Pushgate("", { rememberTransport: false, upgradeInterval: 0, ...options }));
    pg.on("state", (e) => t.states.push({ state: e.state, transport: e.transport, attempt: e.attempt, delay: e.delay }));
    pg.on("reset", (e) => { t.resets.push(e); t.received.push({ reset: true, epoch: e.epoch, offset: e.offset }); });
    pg.subscribe(channel, (m) => t.received.push({ offset: m.offset, epoch: m.epoch, data: m.data }));
  }, { channel, options });
  // Subscribed once the client knows the channel's position.
  await until(page, (ch) => window.pg.state === "connected" && window.pg.cursor().includes(btoa(ch).replace(/=+$/, "")), channel);
}

/** The messages received so far, once there are at least `n`. */
export function received(page, n, timeout) {
  return until(page, (n) => window.t.received.length >= n && window.t.received, n, timeout);
}
