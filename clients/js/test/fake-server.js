// An in-memory stand-in for pushgate, enough of docs/protocol.md for the
// client tests: channels with epochs and history, WebSocket commands, /poll,
// /longpoll and /command. Its `WebSocket` and `fetch` are passed to Pushgate
// as options. Knobs make it misbehave the way networks and proxies do.

import { decodeCursor, encodeCursor } from "../pushgate.js";

let epochSeq = 0;

export class FakeServer {
  constructor() {
    /** @type {Map<string, {epoch: string, offset: number, history: any[]}>} */
    this.channels = new Map();
    this.sockets = new Set();
    this.waiters = new Set();
    /** "ok" | "refuse" (fails to connect) | "silent" (opens, answers nothing) | "cut" (opens, closes at once) */
    this.wsMode = "ok";
    /** when false every fetch fails like a network error */
    this.httpUp = true;
    /** when true, open sockets stop answering (a dead connection the OS has not noticed) */
    this.mute = false;
    /** every request and socket, for assertions: "ws", "GET /poll?…", "POST /command {…}" */
    this.log = [];
    /** WebSocket commands received, parsed */
    this.commands = [];
    const server = this;

    this.WebSocket = class FakeWebSocket {
      constructor(url) {
        this.url = url;
        this.readyState = 0;
        this.binaryType = "blob";
        this.subs = new Set();
        server.log.push(`ws ${url}`);
        const mode = server.wsMode;
        setTimeout(() => {
          if (this.readyState === 3) return;
          if (mode === "refuse" || !server.httpUp) return this._closed(1006);
          this.readyState = 1;
          server.sockets.add(this);
          this.onopen?.({});
          if (mode === "cut") this._closed(1006);
          if (mode === "silent") this.silent = true;
        }, 2);
      }
      send(text) {
        if (this.readyState !== 1) throw new Error("not open");
        const cmd = JSON.parse(text);
        server.commands.push(cmd);
        if (this.silent || server.mute) return;
        setTimeout(() => this.readyState === 1 && server._wsCommand(this, cmd), 1);
      }
      close() {
        this.readyState = 3;
        server.sockets.delete(this);
      }
      /** the server side ends the connection */
      _closed(code) {
        this.readyState = 3;
        server.sockets.delete(this);
        this.onclose?.({ code, reason: "" });
      }
      _frame(obj) {
        if (this.readyState === 1 && !this.silent && !server.mute) this.onmessage?.({ data: JSON.stringify(obj) });
      }
    };

    this.fetch = async (url, init = {}) => server._fetch(url, init);
  }

  channel(name) {
    if (!this.channels.has(name)) this.channels.set(name, { epoch: `ep${++epochSeq}`, offset: 0, history: [] });
    return this.channels.get(name);
  }

  /** Publishes as the API would; returns the `published` reply. */
  publish(channel, data, event) {
    const c = this.channel(channel);
    c.offset++;
    const m = { type: "message", channel, offset: c.offset, epoch: c.epoch, data };
    if (event) m.event = event;
    c.history.push(m);
    for (const ws of this.sockets) if (ws.subs.has(channel)) ws._frame(m);
    for (const w of [...this.waiters]) w.wake();
    return { type: "published", channel, epoch: c.epoch, offset: c.offset };
  }

  /** The history is lost (a restart): a new epoch. */
  restart(channel) {
    this.channels.set(channel, { epoch: `ep${++epochSeq}`, offset: 0, history: [] });
  }

  /** Every open socket is cut, as by a network failure. */
  dropAll() {
    for (const ws of [...this.sockets]) ws._closed(1006);
  }

  /** What to deliver after `since` for one channel: [frames], and its position after. */
  catchup(name, since) {
    const c = this.channel(name);
    const pos = since.get(name);
    if (!pos) return { frames: [], position: { epoch: c.epoch, offset: c.offset } };
    const first = c.history.length ? c.history[0].offset : c.offset + 1;
    if (pos.epoch !== c.epoch || pos.offset > c.offset || pos.offset < first - 1) {
      return { frames: [{ type: "reset", channel: name, epoch: c.epoch, offset: c.offset }], position: { epoch: c.epoch, offset: c.offset } };
    }
    return { frames: c.history.filter((m) => m.offset > pos.offset), position: { epoch: c.epoch, offset: c.offset } };
  }

  _wsCommand(ws, cmd) {
    const reply = (obj) => ws._frame(cmd.id === undefined ? obj : { ...obj, id: cmd.id });
    switch (cmd.type) {
      case "ping":
        return reply({ type: "pong" });
      case "subscribe": {
        if (ws.subs.has(cmd.channel)) return reply({ type: "error", code: "already_subscribed", message: "x" });
        const c = this.channel(cmd.channel);
        ws.subs.add(cmd.channel);
        reply({ type: "subscribed", channel: cmd.channel, epoch: c.epoch, offset: c.offset });
        for (const f of this.catchup(cmd.channel, decodeCursor(cmd.since || "")).frames) ws._frame(f);
        return;
      }
      case "unsubscribe":
        ws.subs.delete(cmd.channel);
        return reply({ type: "unsubscribed", channel: cmd.channel });
      case "publish":
        return reply(this._publishCommand(cmd));
      default:
        return reply({ type: "error", code: "unknown_command", message: "x" });
    }
  }

  _publishCommand(cmd) {
    if (cmd.channel === "forbidden") return { type: "error", code: "forbidden", message: "not here" };
    return this.publish(cmd.channel, cmd.data, cmd.event);
  }

  async _fetch(url, init) {
    const u = new URL(url);
    const method = init.method || "GET";
    this.log.push(`${method} ${u.pathname}${u.search}${init.body ? " " + init.body : ""}`);
    await new Promise((r) => setTimeout(r, 1));
    if (!this.httpUp) throw new TypeError("fetch failed");
    if (init.signal?.aborted) throw new DOMException("aborted", "AbortError");
    if (method === "POST" && u.pathname === "/command") {
      const cmd = JSON.parse(init.body);
      const frame = cmd.type === "ping" ? { type: "pong" } : this._publishCommand(cmd);
      const out = cmd.id === undefined ? frame : { ...frame, id: cmd.id };
      return json(frame.type === "error" ? 403 : 200, out);
    }
    const channels = u.searchParams.getAll("channel");
    const since = decodeCursor(u.searchParams.get("since") || "");
    if (u.pathname === "/poll") return json(200, this._pollBody(channels, since));
    if (u.pathname === "/longpoll") {
      const timeout = parseInt(u.searchParams.get("timeout"), 10);
      let body = this._pollBody(channels, since);
      if (body.messages.length === 0) {
        await this._wait(timeout, init.signal, channels);
        body = this._pollBody(channels, since);
      }
      return json(200, body);
    }
    return json(404, { type: "error", code: "bad_request", message: "no such endpoint" });
  }

  _pollBody(channels, since) {
    const messages = [];
    const entries = [];
    for (const ch of channels) {
      const { frames, position } = this.catchup(ch, since);
      messages.push(...frames);
      entries.push([ch, position]);
    }
    return { messages, cursor: encodeCursor(entries) };
  }

  _wait(ms, signal, channels) {
    return new Promise((resolve, reject) => {
      const w = {
        wake: () => done(resolve),
      };
      const timer = setTimeout(() => done(resolve), ms);
      const onAbort = () => done(() => reject(new DOMException("aborted", "AbortError")));
      const done = (fn) => {
        clearTimeout(timer);
        this.waiters.delete(w);
        signal?.removeEventListener("abort", onAbort);
        fn();
      };
      signal?.addEventListener("abort", onAbort);
      this.waiters.add(w);
      void channels;
    });
  }
}

function json(status, body) {
  return new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });
}

/** Resolves when `pred()` is true; fails the test after `ms`. */
export async function waitFor(pred, ms = 3000, what = "condition") {
  const until = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}
