// A loopback TCP proxy that breaks the network on command. Node `net` only.
//
//   import { startDropProxy } from "./drop-proxy.mjs";
//   const proxy = await startDropProxy({ target: { host: "127.0.0.1", port: server.port } });
//   page.goto(`${proxy.url}/healthz`);       // the browser talks to the proxy
//   await proxy.drop("reset", 2000);          // resolves when the 2 s drop has ended
//   proxy.drop("blackhole"); …; proxy.heal(); // or end a drop by hand
//   proxy.stats();                            // counts, for reports
//   await proxy.close();                      // destroys everything, no handle left
//
// Bytes are forwarded both ways between each accepted socket and a new
// connection to the target; FIN and RST are passed on. The drop modes:
//
//   reset      every open connection is reset both ways (RST to the client and
//              to the target); the proxy stops listening, so new connections
//              are refused, and listens again on the same port when the drop ends
//   cut        every open connection is reset both ways; new ones are accepted at once
//   blackhole  nothing moves either way, no FIN, no RST (reading is paused, the
//              bytes wait in the kernel's buffers); new connections are accepted
//              and held too (the target is dialled only when the drop ends); at
//              the end everything resumes where it stopped: nothing is lost
//   dead       the open connections never forward anything again and are never
//              closed (until close()), nor are those made during the drop; those
//              made after it work
//
// One drop at a time: a new drop() ends the current one first.

import net from "node:net";

const MODES = new Set(["reset", "cut", "blackhole", "dead"]);

/**
 * @param {{target: {host?: string, port: number}, listenPort?: number, host?: string}} options
 *   `listenPort` 0 picks a free port. Note that a port from the ephemeral
 *   range may be taken by an outgoing connection while a `reset` drop has the
 *   proxy not listening; pass a port below the range when that matters.
 * @returns {Promise<DropProxy>}
 */
export async function startDropProxy({ target, listenPort = 0, host = "127.0.0.1" }) {
  const targetHost = target.host || "127.0.0.1";
  /** @type {Set<Pair>} connections being forwarded or held */
  const pairs = new Set();
  const counts = { accepted: 0, reset: 0, dead: 0, held: 0, drops: 0, upstreamErrors: 0 };
  /** @type {{mode: string, endTimer: any, resolve: () => void} | null} */
  let current = null;
  let closed = false;
  /** @type {net.Server | null} */
  let server = null;

  function listen(port) {
    return new Promise((resolve, reject) => {
      const s = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, accept);
      s.once("error", reject);
      s.listen({ port, host }, () => {
        s.off("error", reject);
        s.on("error", () => {}); // nothing more to report once listening
        server = s;
        resolve(s.address().port);
      });
    });
  }

  /** Stops listening: connections to the port are refused. Open sockets are not touched. */
  function unlisten() {
    if (!server) return;
    server.close();
    server = null;
  }

  const port = await listen(listenPort);

  /** @param {net.Socket} client */
  function accept(client) {
    if (closed) return client.destroy();
    counts.accepted++;
    const pair = new Pair(client);
    pairs.add(pair);
    if (current && current.mode === "dead") return pair.kill();
    if (current && current.mode === "blackhole") {
      return pair.hold(); // dialled when the drop ends
    }
    pair.dial();
  }

  class Pair {
    /** @param {net.Socket} client */
    constructor(client) {
      this.client = client;
      /** @type {net.Socket | null} */
      this.upstream = null;
      this.held = false;
      this.dead = false;
      this.done = false;
      client.setNoDelay(true);
      client.on("error", () => this.fail("client"));
      client.on("close", () => this.closed("client"));
    }

    dial() {
      if (this.done || this.upstream) return;
      const up = net.connect({ host: targetHost, port: target.port, allowHalfOpen: true });
      this.upstream = up;
      up.setNoDelay(true);
      up.on("error", () => { counts.upstreamErrors++; this.fail("upstream"); });
      up.on("close", () => this.closed("upstream"));
      up.once("connect", () => {
        if (this.done) return;
        this.flow(this.client, up);
        this.flow(up, this.client);
        this.update();
      });
    }

    /** Forwards `from` → `to` with backpressure; `update()` decides whether it reads. */
    flow(from, to) {
      from.on("data", (chunk) => {
        if (!to.write(chunk)) {
          from._dropBlocked = true;
          from.pause();
          to.once("drain", () => { from._dropBlocked = false; this.update(); });
        }
      });
      from.on("end", () => { if (!this.dead && !to.destroyed) to.end(); });
    }

    /** Reads from each side unless held, dead or waiting for the other side to drain. */
    update() {
      for (const s of [this.client, this.upstream]) {
        if (!s || s.destroyed) continue;
        if (this.held || this.dead || s._dropBlocked || !s.listenerCount("data")) s.pause();
        else s.resume();
      }
    }

    hold() {
      if (this.held || this.dead || this.done) return;
      this.held = true;
      counts.held++;
      this.update();
    }

    release() {
      if (this.dead || this.done) return;
      this.held = false;
      if (!this.upstream) this.dial();
      else this.update();
    }

    /** Never forwards again; kept open until the proxy closes. */
    kill() {
      if (this.dead) return;
      this.dead = true;
      counts.dead++;
      this.update();
    }

    /** RST both ways. */
    reset() {
      if (this.done) return;
      this.done = true;
      counts.reset++;
      for (const s of [this.client, this.upstream]) {
        if (!s || s.destroyed) continue;
        if (typeof s.resetAndDestroy === "function" && s._handle) s.resetAndDestroy();
        else s.destroy();
      }
      pairs.delete(this);
    }

    /** One side failed (an RST or an error): pass the reset on, unless the pair is dead. */
    fail(side) {
      if (this.done) return;
      if (this.dead && side === "upstream") return; // a dead link shows the client nothing, ever
      if (this.dead) return this.destroy();
      const other = side === "client" ? this.upstream : this.client;
      this.done = true;
      if (other && !other.destroyed) {
        if (typeof other.resetAndDestroy === "function" && other._handle) other.resetAndDestroy();
        else other.destroy();
      }
      pairs.delete(this);
    }

    /** One side is fully closed: once both are, forget the pair. */
    closed(side) {
      if (this.dead && side === "upstream") return; // the client stays held
      const other = side === "client" ? this.upstream : this.client;
      if (!other || other.destroyed) {
        this.done = true;
        pairs.delete(this);
        if (other) other.destroy();
      } else if (side === "client") {
        // The client went away: nothing more can flow to it.
        other.destroy();
      }
    }

    destroy() {
      this.done = true;
      this.client.destroy();
      if (this.upstream) this.upstream.destroy();
      pairs.delete(this);
    }
  }

  function endDrop() {
    const d = current;
    if (!d) return;
    current = null;
    clearTimeout(d.endTimer);
    if (d.mode === "blackhole") for (const p of [...pairs]) p.release();
    const done = () => d.resolve();
    if (d.mode === "reset" && !closed) {
      relisten(20).then(done, (err) => { console.error(`drop-proxy: could not listen again on ${port}: ${err.message}`); done(); });
    } else done();
  }

  /** Listens again on the same port; retried briefly if something holds it. */
  async function relisten(tries) {
    for (let i = 0; ; i++) {
      if (closed) return;
      try {
        await listen(port);
        if (closed || (current && current.mode === "reset")) unlisten(); // a new drop began meanwhile
        return;
      } catch (err) {
        if (i + 1 >= tries) throw err;
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  }

  /** @typedef {ReturnType<typeof api>} DropProxy */
  const api = () => ({
    port,
    url: `http://${host}:${port}`,
    /**
     * Starts a drop. With `ms` > 0 it ends by itself after `ms`; otherwise
     * call heal(). Resolves once the drop has ended (and for `reset`, once the
     * proxy listens again).
     * @param {"reset" | "cut" | "blackhole" | "dead"} mode
     * @param {number} [ms]
     * @returns {Promise<void>}
     */
    drop(mode, ms = 0) {
      if (!MODES.has(mode)) throw new TypeError(`unknown drop mode ${mode}`);
      if (closed) return Promise.resolve();
      endDrop();
      counts.drops++;
      const promise = new Promise((resolve) => { current = { mode, endTimer: null, resolve }; });
      const live = [...pairs];
      if (mode === "reset" || mode === "cut") for (const p of live) p.reset();
      if (mode === "reset") unlisten();
      if (mode === "blackhole") for (const p of live) p.hold();
      if (mode === "dead") for (const p of live) p.kill();
      if (ms > 0) current.endTimer = setTimeout(endDrop, ms);
      return promise;
    },
    /** Ends the current drop now (no-op without one). */
    heal() { endDrop(); },
    /** The mode of the drop in progress, or null. */
    get dropping() { return current ? current.mode : null; },
    /**
     * Counts since the start: `accepted` connections, `reset` by drops, made
     * `dead`, `held` by blackholes, `drops` begun, `upstreamErrors` (failed
     * dials or resets from the target); and now: `open` connections (dead
     * ones included) and `deadHeld`.
     */
    stats() {
      let deadHeld = 0;
      for (const p of pairs) if (p.dead) deadHeld++;
      return { ...counts, open: pairs.size, deadHeld };
    },
    /** Destroys every socket and stops listening. */
    async close() {
      if (closed) return;
      closed = true;
      endDrop();
      const s = server;
      server = null;
      for (const p of [...pairs]) p.destroy();
      if (s) await new Promise((r) => s.close(() => r()));
    },
  });
  return api();
}
