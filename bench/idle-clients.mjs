// N real pushgate.js clients in Node, each on its own WebSocket, subscribed
// to one channel and then idle: the traffic an idle browser tab makes
// (its own pings included, whatever the client version sends). Used by
// bench/heartbeat-cost to measure what heartbeats cost the server.
//
//   node --experimental-websocket bench/idle-clients.mjs \
//     --client clients/js/pushgate.js --url http://127.0.0.1:7070 -n 10000
//
// Prints "ready N" once every client is connected and subscribed, then
// idles until stdin closes or SIGTERM; it ends by itself after --max-secs.

import { pathToFileURL } from "node:url";
import { resolve } from "node:path";

const args = process.argv.slice(2);
const opt = (name, fallback) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : fallback;
};
const client = resolve(opt("--client", "clients/js/pushgate.js"));
const url = opt("--url", "http://127.0.0.1:7070");
const n = Number(opt("-n", "1000"));
const channel = opt("--channel", "idle");
const batch = Number(opt("--batch", "250"));
const maxSecs = Number(opt("--max-secs", "600"));

if (typeof WebSocket !== "function") {
  console.error("no WebSocket: run with node --experimental-websocket");
  process.exit(2);
}

const { Pushgate } = await import(pathToFileURL(client).href);
const clients = [];

const ready = (pg) => pg.state === "connected" && pg.cursor() !== "";
const pause = (ms) => new Promise((r) => setTimeout(r, ms));

const stop = setTimeout(() => process.exit(0), maxSecs * 1000);
for (let i = 0; i < n; i += batch) {
  const wave = [];
  for (let j = i; j < Math.min(n, i + batch); j++) {
    const pg = new Pushgate(url, { transports: ["websocket"], rememberTransport: false, upgradeInterval: 0 });
    pg.subscribe(channel, () => {});
    clients.push(pg);
    wave.push(pg);
  }
  while (!wave.every(ready)) await pause(50);
}
console.log(`ready ${clients.length}`);

const end = () => {
  clearTimeout(stop);
  for (const pg of clients) pg.close();
  process.exit(0);
};
process.on("SIGTERM", end);
process.stdin.on("end", end);
process.stdin.resume();
