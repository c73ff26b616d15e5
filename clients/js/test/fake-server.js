// An in-memory stand-in for pushgate, enough of docs/protocol.md for the
// client tests: channels with epochs and history, WebSocket commands, the
// event streams (SSE, NDJSON /stream, iframe), /poll, /longpoll and /command,
// and rooms (`room:*`: members with client ids, join/leave, `signal`).
// Its `WebSocket`, `EventSource` and `fetch` are passed to Pushgate as
// options; the iframe needs `fakePage()`. Knobs make it misbehave the way
// networks and proxies do.

import { decodeCursor, encodeCursor } from "../pushgate.js";

let epochSeq = 0;
/** every server, for the page's iframes to find theirs by path prefix */
const servers = new Set();

export class FakeServer {
  /** @param {{prefix?: string}} [options] a path prefix, so that several servers can share one page */
  constructor({ prefix = "" } = {}) {
    this.prefix = prefix;
    /** the URL to give Pushgate */
    this.base = `http://pushgate.test${prefix}`;
    servers.add(this);
    /** @type {Map<string, {epoch: string, offset: number, history: any[]}>} */
    this.channels = new Map();
    this.sockets = new Set();
    /** open event streams: SSE, NDJSON and iframe */
    this.streams = new Set();
    this.waiters = new Set();
    /** "ok" | "refuse" (fails to connect) | "silent" (opens, answers nothing) | "cut" (opens, closes at once) */
    this.wsMode = "ok";
    /** when false every fetch fails like a network error */
    this.httpUp = true;
    /**
     * when true, the network is dead without a word: sockets and streams open
     * while it is true deliver nothing more, pings included, ever (a dead
     * connection the OS has not noticed), and polls are never answered
     */
    this.mute = false;
    /** ms announced as `heartbeat` in `subscribed` and `pong` on WebSocket and event streams; 0: none (an older server) */
    this.heartbeat = 0;
    /** false: the heartbeat is announced but no `ping` is sent */
    this.pings = true;
    /** WebSocket `subscribe` answered with an error (the link opens but never delivers) */
    this.refuseSubscribe = false;
    /** every request and socket, for assertions: "ws", "GET /poll?…", "POST /command {…}" */
    this.log = [];
    /** WebSocket commands received, parsed */
    this.commands = [];
    /** every token presented, in order: [how, token] with how "ws" (URL), "query" or "bearer" */
    this.tokens = [];
    /** when set, /poll, /longpoll and /stream (those asking for `channel`, if given) answer this refusal: {status, code, message?, channel?} */
    this.refuseHttp = null;
    /** who `presence` lists: [{user, clients}] */
    this.present = [];
    /** users whose personal channel `send` reports online */
    this.online = new Set();
    /** channels with this prefix are rooms */
    this.roomPrefix = "room:";
    /** handed out in a room's `subscribed` */
    this.iceServers = [];
    /** the next connection's client id */
    this.nextClient = 1;
    /** every signal relayed: {room, from, to, data, via} (via "ws" or "http") */
    this.signals = [];
    const server = this;

    this.WebSocket = class FakeWebSocket {
      constructor(url) {
        this.url = url;
        this.readyState = 0;
        this.binaryType = "blob";
        this.subs = new Set();
        this.dead = false;
        this.client = String(server.nextClient++);
        this.key = `key-${this.client}`;
        server.log.push(`ws ${url}`);
        server._noteToken(url, {});
        const mode = server.wsMode;
        setTimeout(() => {
          if (this.readyState === 3) return;
          if (mode === "refuse" || !server.httpUp) return this._closed(1006);
          this.readyState = 1;
          server.sockets.add(this);
          // The WebSocket heartbeat goes out every interval, whatever else is sent.
          if (server.heartbeat && server.pings) this._pinger = unref(setInterval(() => this._frame({ type: "ping" }), server.heartbeat));
          this.onopen?.({});
          if (mode === "cut") this._closed(1006);
          if (mode === "silent") this.silent = true;
        }, 2);
      }
      send(text) {
        if (this.readyState !== 1) throw new Error("not open");
        const cmd = JSON.parse(text);
        server.commands.push(cmd);
        if (this.silent || this._dead()) return;
        setTimeout(() => this.readyState === 1 && server._wsCommand(this, cmd), 1);
      }
      close() {
        this.readyState = 3;
        clearInterval(this._pinger);
        if (server.sockets.delete(this)) server._left(this, this.subs);
      }
      /** delivers a server frame (rooms) */
      deliver(obj) {
        this._frame(obj);
      }
      /** the server side ends the connection */
      _closed(code) {
        this.close();
        this.onclose?.({ code, reason: "" });
      }
      _frame(obj) {
        if (this.readyState === 1 && !this.silent && !this._dead()) this.onmessage?.({ data: JSON.stringify(obj) });
      }
      /** Muted once, dead for good. */
      _dead() {
        if (server.mute) this.dead = true;
        return this.dead;
      }
    };

    /** EventSource's dispatch rule: a named event reaches only the listeners for that name. */
    this.EventSource = class FakeEventSource {
      constructor(url) {
        this.url = url;
        this.readyState = 0;
        /** @type {Map<string, Function[]>} */
        this._listeners = new Map();
        this._stream = null;
        server.log.push(`GET ${server._path(url)}`);
        server._noteToken(url, {});
        setTimeout(() => {
          if (this.readyState === 2) return;
          if (!server.httpUp) return this.onerror?.({});
          this.readyState = 1;
          const write = (obj) => {
            const name = obj.type === "message" ? obj.event || "message" : obj.type;
            // The server's heartbeat is `event:ping` with empty data.
            const data = obj.type === "ping" ? "" : JSON.stringify(obj);
            for (const fn of this._listeners.get(name) || []) fn({ type: name, data });
          };
          // The response ended: the browser reports an error (and would reconnect by itself).
          this._stream = new FakeStream(server, url, write, () => this.readyState !== 2 && this.onerror?.({}));
        }, 2);
      }
      addEventListener(type, fn) {
        if (!this._listeners.has(type)) this._listeners.set(type, []);
        this._listeners.get(type).push(fn);
      }
      close() {
        this.readyState = 2;
        this._stream?.close();
      }
    };

    this.fetch = async (url, init = {}) => server._fetch(url, init);
  }

  /** Records the token a request carries (query parameter or `Authorization: Bearer`). */
  _noteToken(url, headers) {
    const q = new URL(url).searchParams.get("token");
    if (q) this.tokens.push([url.startsWith("ws") ? "ws" : "query", q]);
    const h = headers && (headers.Authorization || headers.authorization);
    if (h && h.startsWith("Bearer ")) this.tokens.push(["bearer", h.slice(7)]);
  }

  /** Every socket is closed by the server with `code` (4002 expired, 4003 disconnected). */
  closeSockets(code, reason = "") {
    for (const ws of [...this.sockets]) {
      ws.close();
      ws.onclose?.({ code, reason });
    }
  }

  /** A `join` or `leave` to every subscriber of `channel`. */
  presenceEvent(type, channel, user, client) {
    const f = { type, channel, user, client };
    for (const ws of this.sockets) if (ws.subs.has(channel)) ws._frame(f);
    for (const st of this.streams) if (st.subs.has(channel)) st.send(f);
  }

  /** The reply to `send`, `presence` and `auth`, as the server gives them. */
  _userCommand(cmd) {
    switch (cmd.type) {
      case "send": {
        const online = cmd.to.filter((u) => this.online.has(u));
        const offline = cmd.to.filter((u) => !this.online.has(u));
        for (const u of cmd.to) this.publish(`#${u}`, { from: this.sender || null, data: cmd.data });
        return { type: "sent", online, offline };
      }
      case "presence":
        return { type: "presence", channel: cmd.channel, users: this.present, anonymous: 0 };
      case "auth":
        return { type: "authed", user: "alice", expires: 1 };
      default:
        return null;
    }
  }

  // -- rooms ----------------------------------------------------------------

  isRoom(channel) {
    return channel.startsWith(this.roomPrefix);
  }

  /** Connections (sockets and event streams) in `room`. */
  members(room) {
    return [...this.sockets, ...this.streams].filter((c) => c.subs.has(room));
  }

  /** `subscribed` for `conn`, with `room` for a room. */
  _subscribed(conn, channel) {
    const c = this.channel(channel);
    const frame = { type: "subscribed", channel, epoch: c.epoch, offset: c.offset };
    if (this.isRoom(channel)) {
      const members = this.members(channel).filter((m) => m !== conn).map((m) => ({ client: m.client, user: null }));
      frame.room = { client: conn.client, client_key: conn.key, members, ice_servers: this.iceServers };
    }
    return frame;
  }

  /** Tells a room's other members that `conn` joined. */
  _joined(conn, channel) {
    if (!this.isRoom(channel)) return;
    for (const m of this.members(channel)) if (m !== conn) m.deliver({ type: "join", channel, user: null, client: conn.client });
  }

  /** Tells the rooms among `channels` that `conn` left. */
  _left(conn, channels) {
    for (const channel of channels) {
      if (!this.isRoom(channel)) continue;
      for (const m of this.members(channel)) if (m !== conn) m.deliver({ type: "leave", channel, user: null, client: conn.client });
    }
  }

  /** Relays a `signal` from `conn`: the server's decision, in small. */
  _signal(conn, cmd, via) {
    const err = (code) => ({ type: "error", code, message: code });
    if (!cmd.room || !cmd.to || cmd.data === undefined) return err("bad_request");
    if (!conn || !conn.subs.has(cmd.room)) return err("not_in_room");
    const target = this.members(cmd.room).find((m) => m.client === String(cmd.to));
    if (!target || target === conn) return err("unknown_client");
    this.signals.push({ room: cmd.room, from: conn.client, to: target.client, data: cmd.data, via });
    target.deliver({ type: "signal", room: cmd.room, from: conn.client, user: null, data: cmd.data });
    return { type: "signaled", room: cmd.room, to: target.client };
  }

  /** A `signal` over POST /command: the sender names its connection and proves it. */
  _httpSignal(cmd) {
    if (cmd.from === undefined) return { type: "error", code: "not_in_room", message: "not_in_room" };
    if (typeof cmd.client_key !== "string") return { type: "error", code: "bad_request", message: "from without client_key" };
    const conn = [...this.sockets, ...this.streams].find((c) => c.client === String(cmd.from));
    if (conn && conn.key !== cmd.client_key) return { type: "error", code: "forbidden", message: "client_key" };
    return this._signal(conn, cmd, "http");
  }

  /** The path and query of `url` below the prefix. */
  _path(url) {
    const u = new URL(url);
    return u.pathname.slice(this.prefix.length) + u.search;
  }

  /** `frame` with the announced heartbeat, if any. */
  _announce(frame) {
    return this.heartbeat ? { ...frame, heartbeat: this.heartbeat } : frame;
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
    for (const s of this.streams) if (s.subs.has(channel)) s.send(m);
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

  /** Ends every event stream on purpose: `{"type":"end","reason":…}`, then the response ends. */
  endStreams(reason) {
    for (const s of [...this.streams]) s.end(reason);
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
        return reply(this._announce({ type: "pong" }));
      case "subscribe": {
        if (ws.subs.has(cmd.channel)) return reply({ type: "error", code: "already_subscribed", message: "x" });
        if (this.refuseSubscribe) return reply({ type: "error", code: "forbidden", message: "no" });
        const c = this.channel(cmd.channel);
        ws.subs.add(cmd.channel);
        reply(this._announce(this._subscribed(ws, cmd.channel)));
        this._joined(ws, cmd.channel);
        for (const f of this.catchup(cmd.channel, decodeCursor(cmd.since || "")).frames) ws._frame(f);
        return;
      }
      case "unsubscribe":
        if (ws.subs.delete(cmd.channel)) this._left(ws, [cmd.channel]);
        return reply({ type: "unsubscribed", channel: cmd.channel });
      case "signal":
        return reply(this._signal(ws, cmd, "ws"));
      case "publish":
        return reply(this._publishCommand(cmd));
      case "auth":
        this.tokens.push(["auth", cmd.token]);
        return reply(this._userCommand(cmd));
      case "send":
      case "presence":
        return reply(this._userCommand(cmd));
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
    const path = u.pathname.slice(this.prefix.length);
    const method = init.method || "GET";
    this.log.push(`${method} ${this._path(url)}${init.body ? " " + init.body : ""}`);
    this._noteToken(url, init.headers);
    await new Promise((r) => setTimeout(r, 1));
    if (!this.httpUp) throw new TypeError("fetch failed");
    if (init.signal?.aborted) throw new DOMException("aborted", "AbortError");
    if (method === "POST" && path === "/command") {
      const cmd = JSON.parse(init.body);
      const frame =
        cmd.type === "ping" ? { type: "pong" } : cmd.type === "signal" ? this._httpSignal(cmd) : this._userCommand(cmd) || this._publishCommand(cmd);
      const out = cmd.id === undefined ? frame : { ...frame, id: cmd.id };
      const status = { unknown_client: 404, bad_request: 400 }[frame.code] || (frame.type === "error" ? 403 : 200);
      return json(status, out);
    }
    const r = this.refuseHttp;
    if (r && path !== "/command" && (!r.channel || u.searchParams.getAll("channel").includes(r.channel))) return json(r.status, { type: "error", code: r.code, message: r.message || r.code });
    if (path === "/stream") return this._ndjson(url, init.signal);
    const channels = u.searchParams.getAll("channel");
    const since = decodeCursor(u.searchParams.get("since") || "");
    // A muted server holds the request until the client gives up on it.
    if (this.mute) await hang(init.signal);
    if (path === "/poll") return json(200, this._pollBody(channels, since));
    if (path === "/longpoll") {
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

  /** GET /stream: one JSON object per line, in a body that stays open. */
  _ndjson(url, signal) {
    const utf8 = new TextEncoder();
    let stream;
    let ctl;
    const body = new ReadableStream({
      start: (controller) => {
        ctl = controller;
        stream = new FakeStream(this, url, (obj) => controller.enqueue(utf8.encode(JSON.stringify(obj) + "\n")), () => controller.close());
      },
      cancel: () => stream.close(),
    });
    signal?.addEventListener("abort", () => {
      stream.close();
      try {
        ctl.error(new DOMException("aborted", "AbortError"));
      } catch {
        /* already closed */
      }
    });
    return new Response(body, { status: 200, headers: { "content-type": "application/x-ndjson" } });
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

/**
 * One event stream (SSE, NDJSON or iframe), framing aside: `subscribed` per
 * channel (with the heartbeat), the catch-up, live messages, and a `ping`
 * whenever the heartbeat interval passes with nothing sent.
 */
class FakeStream {
  /**
   * @param {FakeServer} server
   * @param {string} url the request, with channel= and since=
   * @param {(obj: any) => void} write delivers one object to the client
   * @param {() => void} finish ends the response
   */
  constructor(server, url, write, finish) {
    this.server = server;
    this._write = write;
    this._finish = finish;
    this._pinger = null;
    this.open = true;
    this.dead = false;
    const u = new URL(url);
    this.subs = new Set(u.searchParams.getAll("channel"));
    this.client = String(server.nextClient++);
    this.key = `key-${this.client}`;
    server.streams.add(this);
    const since = decodeCursor(u.searchParams.get("since") || "");
    for (const ch of this.subs) {
      this.send(server._announce(server._subscribed(this, ch)));
      server._joined(this, ch);
    }
    for (const ch of this.subs) for (const f of server.catchup(ch, since).frames) this.send(f);
    this._arm();
  }

  send(obj) {
    if (this.server.mute) this.dead = true; // muted once, dead for good
    if (!this.open || this.dead) return;
    this._write(obj);
    this._arm();
  }

  _arm() {
    clearTimeout(this._pinger);
    const { heartbeat, pings } = this.server;
    if (this.open && heartbeat && pings) this._pinger = unref(setTimeout(() => this.send({ type: "ping" }), heartbeat));
  }

  /** The server ends the stream on purpose: `end` first, then the response ends. */
  end(reason) {
    this.send({ type: "end", reason });
    this.cut();
  }

  /** The response ends without `end`. */
  cut() {
    if (!this.open) return;
    this.close();
    this._finish();
  }

  /** The client went away. */
  close() {
    this.open = false;
    clearTimeout(this._pinger);
    if (this.server.streams.delete(this)) this.server._left(this, this.subs);
  }

  deliver(obj) {
    this.send(obj);
  }
}

/**
 * A browser page for the iframe transport and the page events: `document`
 * (hidden iframes, each served by the server whose prefix its path starts
 * with; `visibilitychange`), `location`, and window `online`/`offline`.
 * Call `remove()` when done.
 */
export function fakePage(origin = "http://pushgate.test") {
  const g = globalThis;
  const saved = ["document", "location", "addEventListener", "removeEventListener"].map((k) => [k, g[k]]);
  const win = new EventTarget();
  const doc = /** @type {any} */ (new EventTarget());
  doc.visibilityState = "visible";
  doc.createElement = () => new FakeIframe();
  doc.body = { appendChild: (el) => el._attach() };
  g.document = doc;
  g.location = { origin, href: `${origin}/` };
  g.addEventListener = win.addEventListener.bind(win);
  g.removeEventListener = win.removeEventListener.bind(win);
  return {
    /** fires a window event: "online", "offline" */
    fire: (type) => win.dispatchEvent(new Event(type)),
    /** @param {"visible" | "hidden"} state */
    setVisibility(state) {
      doc.visibilityState = state;
      doc.dispatchEvent(new Event("visibilitychange"));
    },
    remove() {
      for (const [k, v] of saved) {
        if (v === undefined) delete g[k];
        else g[k] = v;
      }
    },
  };
}

/** A hidden iframe on /iframe?…&callback=NAME: each object is a call of `parent.NAME`. */
class FakeIframe {
  constructor() {
    this.style = {};
    this.src = "";
    this.onload = null;
    this._stream = null;
    this._removed = false;
  }

  setAttribute() {}

  _attach() {
    const u = new URL(this.src);
    // The longest prefix wins; among equals, the newest server.
    const server = [...servers].reverse().filter((s) => u.pathname.startsWith(`${s.prefix}/`)).sort((a, b) => b.prefix.length - a.prefix.length)[0];
    server.log.push(`GET ${server._path(this.src)}`);
    server._noteToken(this.src, {});
    setTimeout(() => {
      if (this._removed) return;
      if (!server.httpUp) return this.onload?.({}); // the browser's error page loads
      const name = u.searchParams.get("callback");
      const write = (obj) => globalThis[name]?.(JSON.parse(JSON.stringify(obj)));
      this._stream = new FakeStream(server, this.src, write, () => !this._removed && this.onload?.({}));
    }, 2);
  }

  remove() {
    this._removed = true;
    this._stream?.close();
  }
}

/** Never settles, unless aborted. */
function hang(signal) {
  return new Promise((_, reject) => signal?.addEventListener("abort", () => reject(new DOMException("aborted", "AbortError"))));
}

/** Timers of the fake server must not keep a finished test process alive. */
function unref(timer) {
  timer?.unref?.();
  return timer;
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
