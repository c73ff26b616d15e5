// pushgate.js — the browser client for pushgate. One dependency-free ES module;
// the server serves this exact file at /pushgate.js.
//
//   import { Pushgate } from "/pushgate.js";
//   const pg = new Pushgate("");            // "" = same origin
//   const stop = pg.subscribe("news", (m) => console.log(m.data));
//   await pg.publish("chat", { text: "hi" });
//
// The wire format is docs/protocol.md. Nothing here touches `window` or
// `document` at import time, so Node can import the pure helpers for tests.

// ---------------------------------------------------------------------------
// Names and errors
// ---------------------------------------------------------------------------

/** The server's channel naming rule: 1–255 of these ASCII characters. */
const CHANNEL_RE = /^[A-Za-z0-9_\-.:@/=+#$!~*]{1,255}$/;
/** The server's event naming rule. */
const EVENT_RE = /^[A-Za-z0-9_\-.:]{1,64}$/;
/** Every transport this file knows, best first. */
export const TRANSPORTS = Object.freeze(["websocket", "sse", "stream", "longpoll", "poll", "iframe"]);

/** @param {unknown} name */
export function isValidChannel(name) {
  return typeof name === "string" && CHANNEL_RE.test(name);
}

/** @param {unknown} name */
export function isValidEvent(name) {
  return typeof name === "string" && EVENT_RE.test(name);
}

/**
 * An error with a machine-readable `code`: the server's error code
 * (`invalid_channel`, `too_large`, …) or one of the client's own
 * (`offline`, `queue_full`, `disconnected`, `closed`, `unavailable`).
 */
export class PushgateError extends Error {
  /**
   * @param {string} code
   * @param {string} message
   * @param {object} [frame] the server's error frame, when there was one
   */
  constructor(code, message, frame) {
    super(message);
    this.name = "PushgateError";
    /** @type {string} */
    this.code = code;
    /** @type {object | undefined} */
    this.frame = frame;
  }
}

/** @param {any} frame a `{"type":"error",…}` frame */
function errorFromFrame(frame) {
  return new PushgateError(String(frame.code || "error"), String(frame.message || frame.code || "error"), frame);
}

/**
 * What a refusal means for the client's token, from an error code, a
 * WebSocket close code or an event stream's `end` reason:
 * `"expired"` (get a fresh token and reconnect at once), `"disconnected"`
 * (the application cut this user off: only a new token may reconnect),
 * `"unauthorized"` (the token, or its absence, is refused), `"forbidden"`
 * (this user may not subscribe there), or null.
 * @param {any} err
 */
export function authFailure(err) {
  if (!err) return null;
  if (err.closeCode === 4002 || err.endReason === "expired" || err.code === "token_expired") return "expired";
  if (err.closeCode === 4003 || err.endReason === "disconnected") return "disconnected";
  if (err.closeCode === 4401 || err.code === "unauthorized") return "unauthorized";
  if (err.closeCode === 4403 || err.code === "forbidden") return "forbidden";
  return null;
}

/**
 * The payload of a JWT (base64url JSON), read without verifying anything:
 * the client only needs `sub` (its personal channel) and `exp` (when to
 * refresh). The server is the one that checks the signature.
 * @param {string} token
 * @returns {{sub?: string, exp?: number, [k: string]: any} | null} null when unreadable
 */
export function tokenPayload(token) {
  if (typeof token !== "string") return null;
  const parts = token.split(".");
  if (parts.length !== 3) return null;
  try {
    const payload = JSON.parse(utf8Decoder.decode(base64ToBytes(parts[1])));
    return payload && typeof payload === "object" && !Array.isArray(payload) ? payload : null;
  } catch {
    return null;
  }
}

/**
 * When to ask for a fresh token, in ms from `at`: `margin` before `exp`, but
 * never later than half way through what is left (a short token is refreshed
 * in time too), and never sooner than 1 s from now. null: no `exp`, nothing
 * to refresh.
 * @param {number | undefined} exp seconds since the Unix epoch
 * @param {number} at now, ms
 * @param {number} [margin] ms (60000)
 * @returns {number | null}
 */
export function refreshDelay(exp, at, margin = 60000) {
  if (typeof exp !== "number" || !Number.isFinite(exp)) return null;
  const left = exp * 1000 - at;
  return Math.max(1000, Math.floor(left - Math.min(margin, left / 2)));
}

// ---------------------------------------------------------------------------
// Base64 (standard and URL-safe): cursors and binary data
// ---------------------------------------------------------------------------

const B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
/** Decoding table accepting both alphabets, so one decoder serves both uses. */
const B64_INDEX = (() => {
  const t = new Int16Array(128).fill(-1);
  for (let i = 0; i < 64; i++) t[B64.charCodeAt(i)] = i;
  t["-".charCodeAt(0)] = 62;
  t["_".charCodeAt(0)] = 63;
  return t;
})();

/**
 * @param {Uint8Array} bytes
 * @param {boolean} [urlSafe] RFC 4648 §5 alphabet without padding (cursors)
 * @returns {string}
 */
export function bytesToBase64(bytes, urlSafe = false) {
  let out = "";
  let i = 0;
  for (; i + 2 < bytes.length; i += 3) {
    const n = (bytes[i] << 16) | (bytes[i + 1] << 8) | bytes[i + 2];
    out += B64[n >> 18] + B64[(n >> 12) & 63] + B64[(n >> 6) & 63] + B64[n & 63];
  }
  const rest = bytes.length - i;
  if (rest === 1) {
    const n = bytes[i] << 16;
    out += B64[n >> 18] + B64[(n >> 12) & 63] + "==";
  } else if (rest === 2) {
    const n = (bytes[i] << 16) | (bytes[i + 1] << 8);
    out += B64[n >> 18] + B64[(n >> 12) & 63] + B64[(n >> 6) & 63] + "=";
  }
  return urlSafe ? out.replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "") : out;
}

/**
 * Decodes standard or URL-safe base64, with or without padding.
 * @param {string} text
 * @returns {Uint8Array}
 * @throws {TypeError} on a character outside both alphabets or a bad length
 */
export function base64ToBytes(text) {
  const s = text.replace(/=+$/, "");
  if (s.length % 4 === 1) throw new TypeError("invalid base64 length");
  const out = new Uint8Array(Math.floor((s.length * 3) / 4));
  let bits = 0;
  let acc = 0;
  let o = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    const v = c < 128 ? B64_INDEX[c] : -1;
    if (v < 0) throw new TypeError("invalid base64 character");
    acc = (acc << 6) | v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (acc >> bits) & 255;
    }
  }
  return out;
}

const utf8 = new TextEncoder();
const utf8Decoder = new TextDecoder();

// ---------------------------------------------------------------------------
// Cursors: `base64url(channel).epoch.offset` entries joined by `~`
// ---------------------------------------------------------------------------

/**
 * @typedef {object} Position where a client stands in one channel
 * @property {string} epoch  the channel's history lifetime id
 * @property {number} offset the last offset processed (0 = before the first message)
 */

/**
 * Builds a cursor string, exactly the server's format (docs/protocol.md).
 * @param {Iterable<[string, Position]>} entries channel → position, in order
 * @returns {string} `""` for no entries
 */
export function encodeCursor(entries) {
  const parts = [];
  for (const [channel, pos] of entries) {
    parts.push(`${bytesToBase64(utf8.encode(channel), true)}.${pos.epoch}.${pos.offset}`);
  }
  return parts.join("~");
}

/**
 * Parses a cursor string into channel → position, in the cursor's order.
 * @param {string} cursor
 * @returns {Map<string, Position>}
 * @throws {PushgateError} code `invalid_cursor` when malformed
 */
export function decodeCursor(cursor) {
  /** @type {Map<string, Position>} */
  const out = new Map();
  if (!cursor) return out;
  for (const entry of cursor.split("~")) {
    const parts = entry.split(".");
    const bad = (why) => new PushgateError("invalid_cursor", `cursor entry ${JSON.stringify(entry)}: ${why}`);
    if (parts.length !== 3) throw bad("expected channel.epoch.offset");
    const [ch, epoch, off] = parts;
    let channel;
    try {
      if (!/^[A-Za-z0-9_-]+$/.test(ch)) throw new TypeError("not base64url");
      channel = utf8Decoder.decode(base64ToBytes(ch));
    } catch {
      throw bad("channel is not base64url");
    }
    if (!isValidChannel(channel)) throw bad("not a valid channel name");
    if (!/^[A-Za-z0-9_-]{1,32}$/.test(epoch)) throw bad("bad epoch");
    if (!/^(0|[1-9][0-9]{0,15})$/.test(off)) throw bad("bad offset");
    if (out.has(channel)) throw bad("channel named twice");
    out.set(channel, { epoch, offset: Number(off) });
  }
  return out;
}

// ---------------------------------------------------------------------------
// Position tracking and de-duplication (the client's mirror of the server's
// core::session rules)
// ---------------------------------------------------------------------------

/**
 * Knows, per subscribed channel, the last position processed, and decides
 * what each server frame means. Two transports may run at once during an
 * upgrade and a reconnect replays from the cursor, so the same message can
 * arrive twice: only the first is delivered.
 */
export class PositionTracker {
  constructor() {
    /** @type {Map<string, Position | null>} null: subscribed, position not known yet */
    this._pos = new Map();
  }

  /**
   * Starts tracking a channel, optionally from a known position (a saved cursor).
   * @param {string} channel
   * @param {Position | null} [position]
   */
  track(channel, position = null) {
    if (!this._pos.has(channel)) this._pos.set(channel, position ? { ...position } : null);
  }

  /** Forgets a channel: a later subscription starts live. @param {string} channel */
  untrack(channel) {
    this._pos.delete(channel);
  }

  /** @param {string} channel */
  has(channel) {
    return this._pos.has(channel);
  }

  /** @param {string} channel @returns {Position | null | undefined} */
  get(channel) {
    const p = this._pos.get(channel);
    return p ? { ...p } : p;
  }

  /** @returns {string[]} tracked channels, in subscription order */
  channels() {
    return [...this._pos.keys()];
  }

  /**
   * The cursor over the given (default: all) channels whose position is known.
   * @param {Iterable<string>} [channels]
   */
  cursor(channels = this._pos.keys()) {
    /** @type {[string, Position][]} */
    const entries = [];
    for (const c of channels) {
      const p = this._pos.get(c);
      if (p) entries.push([c, p]);
    }
    return encodeCursor(entries);
  }

  /**
   * Applies one server frame and returns what the application should see,
   * in order: nothing (a duplicate, or a channel no longer tracked), the
   * message, or a reset followed by the message.
   * @param {any} frame
   * @returns {any[]}
   */
  accept(frame) {
    switch (frame && frame.type) {
      case "message":
        return this._message(frame);
      case "reset":
        return this._reset(frame);
      case "subscribed":
        this._subscribed(frame);
        return [];
      default:
        return [];
    }
  }

  /**
   * Fills in unknown positions from a server cursor (the polls' `cursor`):
   * after a live-start poll, that is the only way to learn where one stands.
   * Known positions are kept — they are at least as far as this answer.
   * @param {string} cursor
   */
  learn(cursor) {
    for (const [channel, pos] of decodeCursor(cursor)) {
      if (this._pos.get(channel) === null) this._pos.set(channel, pos);
    }
  }

  _message(m) {
    if (!this._pos.has(m.channel)) return [];
    const last = this._pos.get(m.channel);
    const next = { epoch: m.epoch, offset: m.offset };
    if (!last) {
      // The first thing known about this channel (a live start): nothing to compare.
      this._pos.set(m.channel, next);
      return [m];
    }
    if (m.epoch === last.epoch) {
      if (m.offset <= last.offset) return [];
      if (m.offset === last.offset + 1) {
        this._pos.set(m.channel, next);
        return [m];
      }
    }
    // A new epoch or a hole: something was lost. Never hide it (same rule as the server).
    this._pos.set(m.channel, next);
    const reset = { type: "reset", channel: m.channel, epoch: m.epoch, offset: m.offset - 1 };
    return [reset, m];
  }

  _reset(r) {
    if (!this._pos.has(r.channel)) return [];
    // The server's word is the truth: it could not honour our position.
    this._pos.set(r.channel, { epoch: r.epoch, offset: r.offset });
    return [r];
  }

  _subscribed(s) {
    // Only a live start learns from `subscribed`. With a known position the
    // server resumes after it (or sends a `reset`), so ours stays right.
    if (this._pos.get(s.channel) === null) {
      this._pos.set(s.channel, { epoch: s.epoch, offset: s.offset });
    }
  }
}

// ---------------------------------------------------------------------------
// Backoff
// ---------------------------------------------------------------------------

/**
 * Backoff with full jitter: a uniformly random delay in `[0, ceiling)`. Full
 * jitter spreads a crowd of clients reconnecting after a server restart
 * instead of synchronising them. The first `fastRetries` attempts share the
 * ceiling `minDelay`: a network that drops for a few seconds is retried
 * quickly, without paying for every refused attempt. After that the ceiling
 * doubles per attempt (attempt `fastRetries` → 2·minDelay, then 4·minDelay, …)
 * up to `maxDelay`.
 * @param {number} attempt 0 for the first retry
 * @param {{minDelay?: number, maxDelay?: number, fastRetries?: number}} [options] defaults 1000 ms, 30000 ms, 4
 * @param {() => number} [random] in [0, 1); injectable for tests
 * @returns {number} whole milliseconds
 */
export function backoffDelay(attempt, { minDelay = 1000, maxDelay = 30000, fastRetries = 4 } = {}, random = Math.random) {
  const doublings = Math.max(0, Math.min(attempt - Math.max(0, fastRetries) + 1, 52));
  const ceiling = Math.min(maxDelay, minDelay * 2 ** doublings);
  return Math.floor(random() * ceiling);
}

// ---------------------------------------------------------------------------
// The offline queue
// ---------------------------------------------------------------------------

/**
 * Holds commands (publishes) until they can be sent, sends them in order and
 * settles each caller's promise with the server's reply.
 *
 * `max` bounds the commands waiting to be sent; beyond it `push` rejects with
 * `queue_full`. When disabled, nothing waits for a connection: `push` while
 * disconnected rejects with `offline`, and going offline rejects what waits.
 */
export class OfflineQueue {
  /** @param {{max?: number, enabled?: boolean}} [options] */
  constructor({ max = 100, enabled = true } = {}) {
    this.max = max;
    this.enabled = enabled;
    /** @type {{command: object, resolve: (v: any) => void, reject: (e: any) => void}[]} */
    this._waiting = [];
    this._inFlight = 0;
    /** the key (transport) the in-flight commands went out on */
    this._inFlightKey = undefined;
    this._connected = false;
    /** @type {((command: object) => Promise<any>) | null} */
    this._send = null;
    this._window = 1;
    this._key = undefined;
    /** Called with `pending` whenever it changes. @type {((pending: number) => void) | null} */
    this.onchange = null;
  }

  /** Commands waiting to be sent. */
  get size() {
    return this._waiting.length;
  }

  /** Commands sent and awaiting their reply. */
  get inFlight() {
    return this._inFlight;
  }

  /** Waiting plus in flight: what a UI shows as "sending…". */
  get pending() {
    return this._waiting.length + this._inFlight;
  }

  get connected() {
    return this._connected;
  }

  /**
   * Queues a command. Resolves with the reply `send` produced for it.
   * @param {object} command
   * @returns {Promise<any>}
   */
  push(command) {
    if (!this.enabled && !this._connected) {
      return Promise.reject(new PushgateError("offline", "not connected (the offline queue is off)"));
    }
    if (this._waiting.length >= this.max) {
      return Promise.reject(new PushgateError("queue_full", `more than ${this.max} messages wait to be sent`));
    }
    const p = new Promise((resolve, reject) => this._waiting.push({ command, resolve, reject }));
    this._changed();
    this._pump();
    return p;
  }

  /**
   * Marks the link up or down. Down with the queue disabled rejects the
   * waiting commands (they were never meant to outlive a connection).
   * @param {boolean} connected
   */
  setConnected(connected) {
    this._connected = connected;
    if (!connected && !this.enabled) this.rejectWaiting("offline", "the connection was lost before sending");
    if (connected) this._pump();
  }

  /**
   * Sends what waits, in order, with at most `window` commands awaiting a reply.
   * `send` must throw synchronously when it cannot send now (the command then
   * stays first in line) and otherwise return a promise of the reply.
   * Commands never overtake across keys: a new transport starts sending only
   * once the previous one's in-flight commands are answered.
   * @param {(command: object) => Promise<any>} send
   * @param {number} [window]
   * @param {unknown} [key] identifies the transport `send` uses
   */
  flush(send, window = 1, key = undefined) {
    this._send = send;
    this._window = Math.max(1, window);
    this._key = key;
    this._pump();
  }

  /** Rejects every waiting command. @param {string} code @param {string} message */
  rejectWaiting(code, message) {
    const waiting = this._waiting.splice(0);
    for (const item of waiting) item.reject(new PushgateError(code, message));
    if (waiting.length) this._changed();
  }

  _pump() {
    while (this._connected && this._send && this._waiting.length) {
      if (this._inFlight >= this._window) return;
      if (this._inFlight > 0 && this._inFlightKey !== this._key) return;
      const item = this._waiting[0];
      let reply;
      try {
        reply = this._send(item.command);
      } catch {
        return; // cannot send now; retried on the next flush
      }
      this._waiting.shift();
      this._inFlight++;
      this._inFlightKey = this._key;
      Promise.resolve(reply)
        .then(item.resolve, item.reject)
        .finally(() => {
          this._inFlight--;
          this._changed();
          this._pump();
        });
    }
  }

  _changed() {
    if (this.onchange) this.onchange(this.pending);
  }
}

// ---------------------------------------------------------------------------
// Small utilities
// ---------------------------------------------------------------------------

/** A minimal event emitter whose listeners cannot break the client. */
class Emitter {
  constructor() {
    /** @type {Map<string, Set<Function>>} */
    this._listeners = new Map();
  }

  on(type, fn) {
    if (typeof fn !== "function") throw new TypeError("listener must be a function");
    if (!this._listeners.has(type)) this._listeners.set(type, new Set());
    this._listeners.get(type).add(fn);
  }

  off(type, fn) {
    const set = this._listeners.get(type);
    if (!set) return;
    if (fn) set.delete(fn);
    else set.clear();
  }

  emit(type, arg) {
    const set = this._listeners.get(type);
    if (!set) return;
    for (const fn of [...set]) safeCall(fn, arg);
  }
}

/**
 * Calls an application callback; an exception is reported (as an uncaught
 * error, so it shows in the console and `window.onerror`) but does not stop
 * the delivery of the next message.
 */
function safeCall(fn, arg) {
  try {
    fn(arg);
  } catch (err) {
    setTimeout(() => {
      throw err;
    });
  }
}

function now() {
  return Date.now();
}

/** Adds `?token=` (or `&token=`) to a URL when there is a token. */
function withToken(url, token) {
  return token ? `${url}${url.includes("?") ? "&" : "?"}token=${encodeURIComponent(token)}` : url;
}

/** Whether `base` is the page's origin (no page: Node, tests — no CORS either). */
function sameOrigin(base) {
  const loc = globalThis.location;
  if (!loc || !loc.origin) return true;
  try {
    return new URL(base).origin === loc.origin;
  } catch {
    return false;
  }
}

/**
 * fetch with the token: `Authorization: Bearer` to the page's own origin;
 * to another origin the `token` query parameter, since a cross-origin
 * `Authorization` header needs a CORS preflight that allows it.
 */
function authFetch(ctx, url, init = {}) {
  const token = ctx.token();
  if (!token) return ctx.options.fetch(url, init);
  if (!sameOrigin(ctx.base)) return ctx.options.fetch(withToken(url, token), init);
  return ctx.options.fetch(url, { ...init, headers: { ...(init.headers || {}), Authorization: `Bearer ${token}` } });
}

/** `?channel=a&channel=b&since=…` — channel names may hold `+ / = # $`. */
function subscribeQuery(channels, since, extra = {}) {
  const parts = channels.map((c) => `channel=${encodeURIComponent(c)}`);
  if (since) parts.push(`since=${encodeURIComponent(since)}`);
  for (const [k, v] of Object.entries(extra)) parts.push(`${k}=${encodeURIComponent(v)}`);
  return `?${parts.join("&")}`;
}

/**
 * Turns a server frame's base64 `data` into bytes, so a binary publication
 * looks the same on every transport: `encoding: "binary"`, `data: Uint8Array`.
 */
function normalizeBinary(frame) {
  if (frame && frame.type === "message" && frame.encoding === "base64" && typeof frame.data === "string") {
    frame.data = base64ToBytes(frame.data);
    frame.encoding = "binary";
  }
  return frame;
}

/**
 * Decodes a WebSocket binary frame: the JSON header (no `data`), one `\n`,
 * then the raw bytes (docs/protocol.md, "Binary data").
 * @param {ArrayBuffer} buffer
 */
export function decodeBinaryFrame(buffer) {
  const bytes = new Uint8Array(buffer);
  const nl = bytes.indexOf(10);
  if (nl < 0) throw new TypeError("binary frame without a header");
  const frame = JSON.parse(utf8Decoder.decode(bytes.subarray(0, nl)));
  frame.data = bytes.slice(nl + 1);
  return frame;
}

/** Parses one text frame/line/event; a garbled one is skipped, not fatal. */
function parseJson(text) {
  try {
    return normalizeBinary(JSON.parse(text));
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------------------
// Transports
//
// Every transport reports to its owner through two hooks:
//   frame(obj)  — any server object (subscribed, message, reset, pong, …)
//   dead(err)   — it stopped for good; the owner decides what comes next
// and offers open(), update(channels) for a new channel set, send(command)
// (a promise of the reply; throws at once when it cannot send) and close().
// ---------------------------------------------------------------------------

/**
 * @typedef {object} TransportContext
 * @property {string} base        http(s) base URL without a trailing slash
 * @property {Required<PushgateOptions>} options
 * @property {() => string[]} channels       the channels to subscribe now
 * @property {(channels?: string[]) => string} since the cursor to resume from
 * @property {() => string | null} token the current token, if any
 * @property {{frame: (obj: any) => void, dead: (err: Error) => void}} hooks
 */

/** Base of every transport: idempotent death and closing. */
class Transport {
  /** @param {TransportContext} ctx */
  constructor(ctx) {
    this.ctx = ctx;
    this.closed = false;
    /** Commands that may await a reply at once (publishes pipelined). */
    this.window = 1;
  }

  /**
   * Whether the link must be dead, judged by the watchdog. By default: nothing
   * received for `bound` ms. The server sends a visible `ping` whenever its
   * announced interval passes in silence, so silence beyond the bound is a
   * dead connection. Polls override it: their silence is expected.
   * @param {number} lastSeen when the last frame arrived
   * @param {number} at now
   * @param {number} bound the link's silence bound, ms
   */
  isDead(lastSeen, at, bound) {
    return at - lastSeen > bound;
  }

  /** Starts connecting. @abstract */
  open() {}

  /** The channel set changed. @abstract @param {string[]} channels */
  update(channels) {}

  /**
   * Sends a command; throws at once when it cannot be sent now.
   * @abstract @param {object} command @returns {Promise<any>}
   */
  send(command) {
    throw new PushgateError("disconnected", "not connected");
  }

  _frame(obj) {
    if (!this.closed && obj) this.ctx.hooks.frame(obj);
  }

  _die(err) {
    if (this.closed) return;
    this.close();
    this.ctx.hooks.dead(err instanceof Error ? err : new PushgateError("disconnected", String(err)));
  }

  close() {
    this.closed = true;
  }
}

/** WebSocket: commands as JSON text frames, binary messages as binary frames. */
class WebSocketTransport extends Transport {
  constructor(ctx) {
    super(ctx);
    this.name = "websocket";
    this.window = 16; // one socket keeps order, so publishes may be pipelined
    /** @type {Map<number, {resolve: Function, reject: Function}>} */
    this._pending = new Map();
    this._nextId = 1;
    /** channels the server has been asked to subscribe */
    this._subscribed = new Set();
    /** subscribe command id → channel, to tell which subscription a refusal is for */
    this._subIds = new Map();
    /** channels refused on this socket: not asked again on it */
    this._refusedHere = new Set();
    this._ws = null;
  }

  open() {
    const Ws = this.ctx.options.WebSocket;
    const url = withToken(this.ctx.base.replace(/^http/, "ws") + "/ws", this.ctx.token());
    let ws;
    try {
      ws = new Ws(url);
    } catch (err) {
      queueMicrotask(() => this._die(err));
      return;
    }
    this._ws = ws;
    ws.binaryType = "arraybuffer";
    ws.onopen = () => this._onOpen();
    ws.onmessage = (e) => this._onMessage(e.data);
    ws.onclose = (e) => {
      const err = new PushgateError(closeErrorCode(e.code), `WebSocket closed (${e.code}${e.reason ? " " + e.reason : ""})`);
      /** @type {any} */ (err).closeCode = e.code;
      this._die(err);
    };
    ws.onerror = () => this._die(new PushgateError("disconnected", "WebSocket error"));
  }

  _onOpen() {
    // One ping right away: its pong proves frames flow end to end, even with
    // no channels (a proxy may accept the upgrade and then pass nothing), and
    // announces the server's heartbeat. No periodic pings: the server sends a
    // `ping` frame every interval, and an incoming frame is not throttled in a
    // background tab the way a timer is.
    this._sendRaw({ type: "ping" });
    this.update(this.ctx.channels());
  }

  _onMessage(data) {
    let frame;
    try {
      frame = typeof data === "string" ? parseJson(data) : decodeBinaryFrame(data);
    } catch {
      frame = null;
    }
    if (!frame) return;
    const sub = typeof frame.id === "number" ? this._subIds.get(frame.id) : undefined;
    if (sub !== undefined) {
      // The answer to a subscribe: a refusal names its channel for the owner.
      this._subIds.delete(frame.id);
      if (frame.type === "error") {
        this._subscribed.delete(sub);
        this._refusedHere.add(sub);
        return this._frame({ type: "$refused", channel: sub, error: frame });
      }
    }
    const waiter = typeof frame.id === "number" ? this._pending.get(frame.id) : undefined;
    if (waiter) {
      this._pending.delete(frame.id);
      if (frame.type === "error") waiter.reject(errorFromFrame(frame));
      else waiter.resolve(frame);
    }
    this._frame(frame);
  }

  /** Subscribes and unsubscribes so that the server's set equals `channels`. */
  update(channels) {
    if (!this._isOpen()) return; // _onOpen subscribes to the set of that moment
    const want = new Set(channels);
    for (const c of this._subscribed) {
      if (!want.has(c)) {
        this._subscribed.delete(c);
        this._sendRaw({ type: "unsubscribe", channel: c });
      }
    }
    for (const c of this._refusedHere) if (!want.has(c)) this._refusedHere.delete(c);
    for (const c of want) {
      if (this._subscribed.has(c) || this._refusedHere.has(c)) continue;
      this._subscribed.add(c);
      const since = this.ctx.since([c]);
      const id = this._nextId++;
      this._subIds.set(id, c);
      this._sendRaw(since ? { type: "subscribe", channel: c, since, id } : { type: "subscribe", channel: c, id });
    }
  }

  send(command) {
    if (!this._isOpen()) throw new PushgateError("disconnected", "not connected");
    const id = this._nextId++;
    const reply = new Promise((resolve, reject) => this._pending.set(id, { resolve, reject }));
    this._ws.send(JSON.stringify({ ...command, id }));
    return reply;
  }

  /** Commands awaiting a reply; a retired link closes once this is 0. */
  get inFlight() {
    return this._pending.size;
  }

  _isOpen() {
    return !this.closed && this._ws !== null && this._ws.readyState === 1;
  }

  _sendRaw(obj) {
    if (this._isOpen()) this._ws.send(JSON.stringify(obj));
  }

  close() {
    if (this.closed) return;
    super.close();
    if (this._ws) {
      this._ws.onopen = this._ws.onmessage = this._ws.onclose = this._ws.onerror = null;
      try {
        this._ws.close(1000);
      } catch {
        /* already closing */
      }
    }
    for (const w of this._pending.values()) w.reject(new PushgateError("disconnected", "the connection closed before the reply"));
    this._pending.clear();
  }
}

/**
 * The HTTP transports: they receive on a GET and send with POST /command.
 * A new channel set means restarting the GET with the new list and the
 * current cursor. With no channel at all there is nothing to GET; the link is
 * proved with a `ping` command and then sits idle.
 */
class HttpTransport extends Transport {
  constructor(ctx) {
    super(ctx);
    this._channels = [];
    /** bumped on every restart so answers to a superseded request are ignored */
    this._gen = 0;
    /** when the current receiving request started: silence counts from there */
    this._startedAt = 0;
  }

  /** With no channel there is no receiving request, so no silence to judge. */
  isDead(lastSeen, at, bound) {
    return this._channels.length > 0 && super.isDead(Math.max(lastSeen, this._startedAt), at, bound);
  }

  open() {
    this.update(this.ctx.channels());
  }

  update(channels) {
    if (this.closed) return;
    const same = channels.length === this._channels.length && channels.every((c, i) => c === this._channels[i]);
    if (same && this._gen > 0) return;
    this._channels = [...channels];
    this._reopen();
  }

  /** Replaces the receiving request with a new one from the current cursor. */
  _reopen() {
    this._gen++;
    this._stop();
    this._startedAt = now();
    if (this._channels.length === 0) this._probe(this._gen);
    else this._start(this._gen, this._channels, this.ctx.since(this._channels));
  }

  /**
   * `end` closes an event stream the server ended on purpose. `lifetime`
   * (an iframe document grew old) and `behind` (the connection fell behind
   * its send queue) are not network failures: the stream is replaced at once,
   * with no state change and no backoff. Anything else (`shutdown`, …) is a
   * dead link, and the usual reconnect follows.
   */
  _frame(obj) {
    if (!obj || obj.type !== "end") return super._frame(obj);
    if (this.closed) return;
    const reason = String(obj.reason || "unknown");
    if (reason === "lifetime" || reason === "behind") this._reopen();
    else {
      const err = new PushgateError(reason === "expired" ? "token_expired" : "disconnected", `the server ended the stream: ${reason}`);
      /** @type {any} */ (err).endReason = reason;
      this._die(err);
    }
  }

  /** Opens the receiving request(s). @abstract */
  _start(gen, channels, since) {}

  /** Ends the receiving request(s). @abstract */
  _stop() {}

  /**
   * A refused subscribing request (401/403) is for the channels it asked
   * for: those its message names (the server names the channel it refuses),
   * else all of them.
   */
  _refused(err) {
    const kind = authFailure(err);
    if (kind !== "forbidden" && kind !== "unauthorized") return err;
    const named = this._channels.filter((c) => err.message.includes(c));
    err.channels = named.length ? named : [...this._channels];
    return err;
  }

  async _probe(gen) {
    try {
      const pong = await this.send({ type: "ping" });
      if (gen === this._gen) this._frame(pong);
    } catch (err) {
      if (gen === this._gen) this._die(err);
    }
  }

  _current(gen) {
    return !this.closed && gen === this._gen;
  }

  send(command) {
    if (this.closed) throw new PushgateError("disconnected", "not connected");
    return postCommand(this.ctx, command);
  }

  close() {
    if (this.closed) return;
    super.close();
    this._gen++;
    this._stop();
  }
}

/**
 * POST /command: one command, its reply frame as the response.
 * @returns {Promise<any>} the reply; rejects with the server's error code
 */
async function postCommand(ctx, command) {
  let res;
  try {
    res = await authFetch(ctx, `${ctx.base}/command`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(command),
      cache: "no-store",
    });
  } catch (err) {
    throw new PushgateError("disconnected", `POST /command failed: ${err && err.message}`);
  }
  const frame = await readJson(res);
  if (frame.type === "error") throw errorFromFrame(frame);
  return frame;
}

/** The JSON body of a pushgate answer; anything else (a proxy's page) is `unavailable`. */
async function readJson(res) {
  let body;
  try {
    body = await res.json();
  } catch {
    throw new PushgateError("unavailable", `HTTP ${res.status} without a pushgate answer`);
  }
  if (!res.ok && (!body || body.type !== "error")) {
    throw new PushgateError("unavailable", `HTTP ${res.status}`);
  }
  return body;
}

/**
 * Server-Sent Events with `EventSource`.
 *
 * EventSource hands a named event only to listeners registered for that
 * name, and a message published with an event name arrives as
 * `event: <name>`. So this transport listens for `message`, `subscribed`,
 * `reset`, the room events `join`, `leave` and `signal`, and every name in
 * `options.sseEvents`; messages under other names
 * never reach the page, show up as a hole, and the hole becomes a `reset`.
 * List your event names, or prefer a transport without the limit.
 *
 * EventSource hides comments, so the server's heartbeat is a named event,
 * `event: ping`, listened for like `end`: the watchdog sees this stream too.
 * EventSource's automatic reconnect is not used: on an error the stream is
 * closed and the client reconnects with its cursor and its backoff.
 */
class SseTransport extends HttpTransport {
  constructor(ctx) {
    super(ctx);
    this.name = "sse";
    this._es = null;
  }

  _start(gen, channels, since) {
    const Es = this.ctx.options.EventSource;
    let es;
    try {
      es = new Es(this.ctx.base + "/sse" + subscribeQuery(channels, since, tokenParam(this.ctx)));
    } catch (err) {
      queueMicrotask(() => this._die(err));
      return;
    }
    this._es = es;
    const onEvent = (e) => {
      if (this._current(gen)) this._frame(parseJson(e.data));
    };
    // The frame's own `type` decides, not the event name: a message published
    // under the event name `ping` or `end` stays a message.
    const onPing = (e) => {
      if (this._current(gen)) this._frame(parseJson(e.data) || { type: "ping" });
    };
    const names = new Set(["message", "subscribed", "reset", "end", "join", "leave", "signal", ...this.ctx.options.sseEvents]);
    names.delete("ping");
    for (const name of names) es.addEventListener(name, onEvent);
    es.addEventListener("ping", onPing);
    es.onerror = () => {
      if (this._current(gen)) this._die(new PushgateError("disconnected", "the event stream failed"));
    };
  }

  _stop() {
    if (this._es) {
      this._es.onerror = null;
      this._es.close();
      this._es = null;
    }
  }
}

/** NDJSON over fetch and a ReadableStream: every object, pings included, is seen. */
class StreamTransport extends HttpTransport {
  constructor(ctx) {
    super(ctx);
    this.name = "stream";
    this._abort = null;
  }

  _start(gen, channels, since) {
    const abort = new AbortController();
    this._abort = abort;
    this._read(gen, this.ctx.base + "/stream" + subscribeQuery(channels, since), abort.signal).then(
      () => this._current(gen) && this._die(new PushgateError("disconnected", "the stream ended")),
      (err) => this._current(gen) && this._die(this._refused(err)),
    );
  }

  async _read(gen, url, signal) {
    const res = await authFetch(this.ctx, url, { signal, cache: "no-store" });
    if (!res.ok) throw errorFromFrame(await readJson(res));
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buffered = "";
    for (;;) {
      const { done, value } = await reader.read();
      if (done || !this._current(gen)) return;
      buffered += decoder.decode(value, { stream: true });
      let nl;
      while ((nl = buffered.indexOf("\n")) >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        if (line && this._current(gen)) this._frame(parseJson(line));
      }
    }
  }

  _stop() {
    if (this._abort) this._abort.abort();
    this._abort = null;
  }
}

/**
 * Polling, short or long. Each answer is `{messages, cursor}`; the messages
 * go through the tracker and the cursor teaches it live-start positions. The
 * next request resumes from the client's cursor.
 */
class PollTransport extends HttpTransport {
  /** @param {TransportContext} ctx @param {boolean} long */
  constructor(ctx, long) {
    super(ctx);
    this.name = long ? "longpoll" : "poll";
    this._long = long;
    this._abort = null;
    this._timer = null;
    /** when the outstanding request is overdue; 0 while none is outstanding */
    this._deadline = 0;
  }

  /**
   * Polls are silent between requests by design (and the short poll's timer
   * may be throttled in a background tab), so only an overdue request counts:
   * a long poll is answered within `longpollTimeout`, a short poll at once.
   */
  isDead(lastSeen, at) {
    return this._deadline > 0 && at > this._deadline;
  }

  _start(gen, channels) {
    // The first request is always a short poll: it answers at once, which
    // proves the transport within `openTimeout` and learns live positions.
    this._request(gen, channels, false);
  }

  async _request(gen, channels, long) {
    const opts = this.ctx.options;
    const since = this.ctx.since(channels);
    const url = long
      ? this.ctx.base + "/longpoll" + subscribeQuery(channels, since, { timeout: `${opts.longpollTimeout}ms` })
      : this.ctx.base + "/poll" + subscribeQuery(channels, since);
    const abort = new AbortController();
    this._abort = abort;
    const lp = opts.longpollTimeout;
    this._deadline = now() + (long ? lp + Math.max(lp / 2, 1000) : opts.openTimeout);
    let body;
    try {
      const res = await authFetch(this.ctx, url, { signal: abort.signal, cache: "no-store" });
      body = await readJson(res);
    } catch (err) {
      if (this._current(gen)) this._die(err);
      return;
    }
    if (!this._current(gen)) return;
    this._deadline = 0;
    if (body.type === "error") return this._die(this._refused(errorFromFrame(body)));
    for (const m of body.messages || []) this._frame(normalizeBinary(m));
    // A private frame: the owner feeds it to PositionTracker.learn().
    this._frame({ type: "$cursor", cursor: body.cursor || "" });
    if (!this._current(gen)) return;
    if (this._long) this._request(gen, channels, true);
    else this._timer = setTimeout(() => this._current(gen) && this._request(gen, channels, false), opts.pollInterval);
  }

  _stop() {
    if (this._abort) this._abort.abort();
    this._abort = null;
    this._deadline = 0;
    clearTimeout(this._timer);
  }
}

/**
 * The hidden-iframe "forever frame": `/iframe?…&callback=NAME` calls
 * `parent.NAME(obj)` once per object. Same-origin only (browsers forbid the
 * `parent.` call across origins). The server's heartbeat is a script call
 * too, so the watchdog watches this stream like the others: it must, since a
 * browser does not fire `load` when the connection breaks mid-document. A
 * `load` without an `end` first (a clean end) still means the stream ended.
 * The document grows with every object, so it is replaced after
 * `IFRAME_RECYCLE` objects (and when the server ends it for its lifetime).
 */
const IFRAME_RECYCLE = 1000;
let iframeSeq = 0;

class IframeTransport extends HttpTransport {
  constructor(ctx) {
    super(ctx);
    this.name = "iframe";
    this._iframe = null;
    this._callback = null;
  }

  _start(gen, channels, since) {
    const doc = globalThis.document;
    const name = `__pushgate_${++iframeSeq}_${Math.random().toString(36).slice(2, 10)}`;
    let count = 0;
    globalThis[name] = (obj) => {
      if (!this._current(gen)) return;
      this._frame(normalizeBinary(obj));
      if (++count >= IFRAME_RECYCLE && this._current(gen)) this._reopen();
    };
    this._callback = name;
    const iframe = doc.createElement("iframe");
    iframe.style.display = "none";
    iframe.setAttribute("aria-hidden", "true");
    iframe.onload = () => this._current(gen) && this._die(new PushgateError("disconnected", "the iframe stream ended"));
    iframe.src = this.ctx.base + "/iframe" + subscribeQuery(channels, since, { callback: name, ...tokenParam(this.ctx) });
    (doc.body || doc.documentElement).appendChild(iframe);
    this._iframe = iframe;
  }

  _stop() {
    if (this._iframe) {
      this._iframe.onload = null;
      this._iframe.remove();
      this._iframe = null;
    }
    if (this._callback) {
      // Left as a no-op rather than deleted: a script already parsed in the
      // dying document may still call it.
      globalThis[this._callback] = () => {};
      const name = this._callback;
      setTimeout(() => delete globalThis[name], 1000);
      this._callback = null;
    }
  }
}

/** `{token}` for a URL the browser opens itself (EventSource, iframe), or nothing. */
function tokenParam(ctx) {
  const token = ctx.token();
  return token ? { token } : {};
}

/** The client's error code for a WebSocket close code. */
function closeErrorCode(code) {
  switch (code) {
    case 4002:
      return "token_expired";
    case 4401:
      return "unauthorized";
    case 4403:
      return "forbidden";
    default:
      return "disconnected";
  }
}

/** @returns {string | null} why `name` cannot run here, or null if it can */
function unavailableReason(name, options, base) {
  const g = globalThis;
  switch (name) {
    case "websocket":
      return options.WebSocket ? null : "no WebSocket";
    case "sse":
      if (!options.fetch) return "no fetch";
      return options.EventSource ? null : "no EventSource";
    case "stream":
      return options.fetch && typeof ReadableStream === "function" ? null : "no fetch streams";
    case "longpoll":
    case "poll":
      return options.fetch ? null : "no fetch";
    case "iframe":
      if (!options.fetch) return "no fetch";
      if (!g.document || !g.location) return "no document";
      return new URL(base).origin === g.location.origin ? null : "iframe needs the same origin";
    default:
      return "unknown transport";
  }
}

function createTransport(name, ctx) {
  switch (name) {
    case "websocket":
      return new WebSocketTransport(ctx);
    case "sse":
      return new SseTransport(ctx);
    case "stream":
      return new StreamTransport(ctx);
    case "longpoll":
      return new PollTransport(ctx, true);
    case "poll":
      return new PollTransport(ctx, false);
    case "iframe":
      return new IframeTransport(ctx);
    default:
      throw new TypeError(`unknown transport ${name}`);
  }
}

// ---------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------

/**
 * @typedef {"websocket" | "sse" | "stream" | "longpoll" | "poll" | "iframe"} TransportName
 * @typedef {"connecting" | "connected" | "reconnecting" | "disconnected" | "offline"} State
 *
 * @typedef {object} PushgateOptions
 * @property {TransportName[]} [transports] tried in this order; default websocket, sse, longpoll, poll, iframe
 * @property {number} [openTimeout] ms for a transport to deliver its first frame (5000)
 * @property {number} [minDelay] backoff ceiling of the first `fastRetries` attempts, ms (1000)
 * @property {number} [maxDelay] backoff ceiling, ms (30000)
 * @property {number} [fastRetries] attempts capped at `minDelay` before the ceiling doubles (4)
 * @property {number} [stableAfter] a transport whose connections die twice in a row within this many ms of opening is demoted (10000)
 * @property {number} [heartbeatTimeout] ms of silence that means a dead connection, until the server announces its heartbeat (45000)
 * @property {number} [pollInterval] ms between short polls (2000)
 * @property {number} [longpollTimeout] ms the server holds a long poll (25000)
 * @property {number} [upgradeInterval] ms between tries of a better transport; 0 = never (60000)
 * @property {{max?: number} | boolean} [offlineQueue] publishes kept while disconnected ({max: 100}); false = reject at once
 * @property {number} [maxMessageSize] bytes; bigger publishes are refused locally (65536, the server's default)
 * @property {string[]} [sseEvents] publisher event names to listen for on SSE ([])
 * @property {string} [cursor] a saved `pg.cursor()` to resume from ("")
 * @property {boolean} [rememberTransport] keep the working transport in sessionStorage (true)
 * @property {boolean} [autoConnect] connect in the constructor (true)
 * @property {any} [WebSocket] constructor to use (globalThis.WebSocket)
 * @property {any} [EventSource] constructor to use (globalThis.EventSource)
 * @property {typeof fetch} [fetch] function to use (globalThis.fetch)
 * @property {string | null} [token] a JWT for the server (null: anonymous)
 * @property {(() => Promise<string | null> | string | null) | null} [getToken] called for a token before connecting, before it expires and when the server says it expired; null: no token to give
 * @property {number} [tokenRefreshMargin] ms before `exp` to ask for a fresh token (60000; at most half the time left)
 * @property {any} [RTCPeerConnection] constructor `pg.rtc` uses (globalThis.RTCPeerConnection)
 */

/** The default transport order. @type {readonly TransportName[]} */
export const DEFAULT_TRANSPORTS = Object.freeze(["websocket", "sse", "longpoll", "poll", "iframe"]);

/** @returns {Required<PushgateOptions>} */
function withDefaults(options) {
  const g = globalThis;
  /** @type {any} */
  const o = {
    transports: [...DEFAULT_TRANSPORTS],
    openTimeout: 5000,
    minDelay: 1000,
    maxDelay: 30000,
    fastRetries: 4,
    stableAfter: 10000,
    heartbeatTimeout: 45000,
    pollInterval: 2000,
    longpollTimeout: 25000,
    upgradeInterval: 60000,
    offlineQueue: { max: 100 },
    maxMessageSize: 64 * 1024,
    sseEvents: [],
    cursor: "",
    rememberTransport: true,
    autoConnect: true,
    WebSocket: g.WebSocket,
    EventSource: g.EventSource,
    fetch: typeof g.fetch === "function" ? g.fetch.bind(g) : undefined,
    token: null,
    getToken: null,
    tokenRefreshMargin: 60000,
    RTCPeerConnection: g.RTCPeerConnection,
  };
  for (const [k, v] of Object.entries(options || {})) if (v !== undefined) o[k] = v;
  for (const name of o.transports) if (!TRANSPORTS.includes(name)) throw new TypeError(`unknown transport ${JSON.stringify(name)}`);
  for (const name of o.sseEvents) if (!isValidEvent(name)) throw new TypeError(`invalid event name ${JSON.stringify(name)}`);
  if (o.token !== null && typeof o.token !== "string") throw new TypeError("token must be a string");
  if (o.getToken !== null && typeof o.getToken !== "function") throw new TypeError("getToken must be a function");
  return o;
}

/** Resolves `""` or a relative base against the page; strips a trailing slash. */
function resolveBase(baseUrl) {
  const loc = globalThis.location;
  let url;
  try {
    url = new URL(baseUrl || "/", loc && loc.href);
  } catch {
    throw new TypeError(`baseUrl ${JSON.stringify(baseUrl)} must be absolute outside a browser page`);
  }
  url.search = "";
  url.hash = "";
  return url.href.replace(/\/+$/, "");
}

/** sessionStorage may be missing, disabled or throwing (sandboxes, privacy modes). */
function storage() {
  try {
    const s = globalThis.sessionStorage;
    return s && typeof s.getItem === "function" ? s : null;
  } catch {
    return null;
  }
}

/**
 * One link: a transport plus what the client knows about it.
 * @typedef {object} Link
 * @property {Transport & {name: string}} transport
 * @property {"primary" | "candidate" | "retired"} role
 * @property {boolean} established  a first frame arrived
 * @property {number} establishedAt
 * @property {number} lastSeen       when the last frame arrived
 * @property {number} bound          ms of silence that mean death, from the server's heartbeat; 0 = not announced
 * @property {any} openTimer
 */

export class Pushgate {
  /**
   * @param {string} [baseUrl] e.g. `http://127.0.0.1:7070`; `""` for the page's origin
   * @param {PushgateOptions} [options]
   */
  constructor(baseUrl = "", options = {}) {
    this._opts = withDefaults(options);
    this._base = resolveBase(baseUrl);
    this._events = new Emitter();
    /** @type {Map<string, Set<(m: any) => void>>} */
    this._handlers = new Map();
    this._tracker = new PositionTracker();
    /** positions from `options.cursor`, used when their channel is subscribed */
    this._seed = new Map();
    try {
      this._seed = decodeCursor(this._opts.cursor);
    } catch (err) {
      // A damaged saved cursor must not stop the app: start live, and say so
      // once listeners can hear it.
      queueMicrotask(() => this._events.emit("error", err));
    }
    const q = this._opts.offlineQueue;
    this._queue = new OfflineQueue({
      max: q && typeof q === "object" && q.max != null ? q.max : 100,
      enabled: q !== false,
    });
    this._queue.onchange = (n) => this._events.emit("pending", n);

    /** @type {State} */
    this._state = "disconnected";
    /** @type {string | null} */
    this._stateTransport = null;
    /** @type {Link | null} */ this._link = null;
    /** @type {Link | null} */ this._candidate = null;
    this._attempt = 0; // backoff attempts since a connection last delivered
    this._cycle = []; // transports still to try in this round
    /** @type {Error | undefined} */
    this._lastOpenError = undefined;
    this._upgradeTargets = [];
    this._unstable = 0; // consecutive short-lived connections on one transport
    /** @type {Map<string, number>} transport → demoted until (ms) */
    this._demoted = new Map();
    this._timers = { retry: null, upgrade: null, watchdog: null, refresh: null };
    /** @type {string | null} */
    this._token = null;
    /** @type {any} the token's payload, unverified */
    this._claims = null;
    /** @type {Promise<string | null> | null} a getToken call under way */
    this._tokenFetch = null;
    /** the personal channel `#<sub>` subscribed for direct messages, and its unsubscribe */
    this._personal = { channel: /** @type {string | null} */ (null), off: /** @type {(() => void) | null} */ (null) };
    /** channels an HTTP transport's request was refused (401/403) for: left out until the token changes or the app subscribes again */
    this._refusedChannels = new Set();
    /** reconnects at once with a fresh token since a connection last delivered */
    this._authRetries = 0;
    this._syncScheduled = false;
    /** room channel → what the primary link's `subscribed` and join/leave say about it: our id, key, the other members */
    this._memberships = new Map();
    /** room channel → the RtcRoom joined there (or being joined) */
    this._rooms = new Map();
    this._rtc = null;
    this._active = false; // between connect() and close()
    this._detach = null;

    if (this._opts.token) this._setToken(this._opts.token);

    const remembered = this._opts.rememberTransport && storage();
    this._preferred = remembered ? remembered.getItem(this._storageKey()) : null;

    // Deferred, so that listeners and subscriptions added right after
    // `new Pushgate()` see the first state change and go out in the first round.
    this._autoConnect = this._opts.autoConnect;
    if (this._autoConnect) queueMicrotask(() => this._autoConnect && this.connect());
  }

  // -- public surface -------------------------------------------------------

  /** @returns {State} */
  get state() {
    return this._state;
  }

  /** The transport in use when connected, else null. @returns {TransportName | null} */
  get transport() {
    return this._state === "connected" && this._link ? /** @type {any} */ (this._link.transport.name) : null;
  }

  /** The user the token names (its `sub`, read without verifying), or null. @returns {string | null} */
  get user() {
    return this._claims && typeof this._claims.sub === "string" ? this._claims.sub : null;
  }

  /** Publishes queued or awaiting their reply. */
  get pending() {
    return this._queue.pending;
  }

  /**
   * WebRTC over this client's connection: `pg.rtc.join(room, options)`
   * joins a room (a channel whose namespace has `signal = true`, e.g.
   * `room:NAME`) and connects to every other member peer to peer.
   * @returns {{join: (room: string, options?: RoomOptions) => Promise<RtcRoom>}}
   */
  get rtc() {
    if (!this._rtc) this._rtc = Object.freeze({ join: (room, options) => this._joinRoom(room, options) });
    return this._rtc;
  }

  /**
   * Where the client stands: `base64url(channel).epoch.offset` per subscribed
   * channel with a known position, joined by `~` (docs/protocol.md). Save it
   * and pass it back as `options.cursor` to resume after a page load.
   */
  cursor() {
    return this._tracker.cursor();
  }

  /**
   * @param {"state" | "message" | "reset" | "error" | "pending" | "join" | "leave" | "direct" | "disconnected" | "token"} type
   * @param {Function} fn
   * @returns {() => void} removes the listener
   */
  on(type, fn) {
    this._events.on(type, fn);
    return () => this._events.off(type, fn);
  }

  /** Removes one listener, or every listener of `type` without `fn`. */
  off(type, fn) {
    this._events.off(type, fn);
  }

  /**
   * Subscribes to a channel. Several handlers may share a channel.
   * @param {string} channel
   * @param {(message: any) => void} onMessage
   * @returns {() => void} unsubscribes this handler
   */
  subscribe(channel, onMessage) {
    if (!isValidChannel(channel)) throw new TypeError(`invalid channel name ${JSON.stringify(channel)}`);
    if (typeof onMessage !== "function") throw new TypeError("onMessage must be a function");
    let set = this._handlers.get(channel);
    if (!set) {
      this._refusedChannels.delete(channel); // subscribing anew asks again
      set = new Set();
      this._handlers.set(channel, set);
      this._tracker.track(channel, this._seed.get(channel) || null);
      this._seed.delete(channel);
      this._scheduleSync();
    }
    // Wrapped so the same function may be subscribed twice and removed once each.
    const entry = (m) => onMessage(m);
    set.add(entry);
    return () => {
      if (!set.delete(entry) || set.size > 0 || this._handlers.get(channel) !== set) return;
      this._handlers.delete(channel);
      this._tracker.untrack(channel);
      this._scheduleSync();
    };
  }

  /**
   * Publishes JSON `data` on `channel`. While disconnected the publish waits
   * in the offline queue (unless it is off).
   * @param {string} channel
   * @param {any} data any JSON value
   * @param {{event?: string}} [options]
   * @returns {Promise<{type: "published", channel: string, epoch: string, offset: number}>}
   */
  publish(channel, data, { event } = {}) {
    if (!isValidChannel(channel)) {
      return Promise.reject(new PushgateError("invalid_channel", `invalid channel name ${JSON.stringify(channel)}`));
    }
    if (event !== undefined && !isValidEvent(event)) {
      return Promise.reject(new PushgateError("invalid_event", `invalid event name ${JSON.stringify(event)}`));
    }
    const command = event === undefined ? { type: "publish", channel, data } : { type: "publish", channel, data, event };
    let text;
    try {
      text = JSON.stringify(command);
    } catch (err) {
      return Promise.reject(new PushgateError("bad_json", `data cannot be sent as JSON: ${err && err.message}`));
    }
    const size = utf8.encode(text).length + 24; // + room for the id
    if (size > this._opts.maxMessageSize) {
      return Promise.reject(new PushgateError("too_large", `the message is ${size} bytes; the limit is ${this._opts.maxMessageSize}`));
    }
    return this._queue.push(command);
  }

  /**
   * Sends a direct message to users (`to`: a user id or a list, at most 100):
   * it lands on each recipient's personal channel `#<id>` as
   * `{"from": <your user>, "data": data}`. Needs a token that allows sending.
   * Resolves with who was online (has a connection on the server) and who not.
   * @param {string | string[]} to
   * @param {any} data any JSON value
   * @param {{event?: string}} [options]
   * @returns {Promise<{online: string[], offline: string[]}>}
   */
  send(to, data, { event } = {}) {
    const ids = typeof to === "string" ? [to] : Array.isArray(to) ? [...to] : null;
    if (!ids || ids.length === 0 || ids.length > 100 || !ids.every((id) => typeof id === "string" && isValidChannel(`#${id}`))) {
      return Promise.reject(new PushgateError("bad_request", "to must be a user id or a list of 1 to 100 user ids"));
    }
    if (event !== undefined && !isValidEvent(event)) {
      return Promise.reject(new PushgateError("invalid_event", `invalid event name ${JSON.stringify(event)}`));
    }
    const command = event === undefined ? { type: "send", to: ids, data } : { type: "send", to: ids, data, event };
    const size = this._commandSize(command);
    if (size instanceof Error) return Promise.reject(size);
    return this._queue.push(command).then((r) => ({ online: (r && r.online) || [], offline: (r && r.offline) || [] }));
  }

  /**
   * Who is subscribed to `channel` (a channel whose namespace has presence):
   * `{channel, users: [{user, clients}], anonymous}`.
   * @param {string} channel
   * @returns {Promise<{channel: string, users: {user: string, clients: string[]}[], anonymous: number}>}
   */
  presence(channel) {
    if (!isValidChannel(channel)) {
      return Promise.reject(new PushgateError("invalid_channel", `invalid channel name ${JSON.stringify(channel)}`));
    }
    return this._queue.push({ type: "presence", channel }).then((r) => {
      const { type, id, ...rest } = r || {};
      void type, void id;
      return rest;
    });
  }

  /** The command's size, or the error that refuses it. */
  _commandSize(command) {
    let text;
    try {
      text = JSON.stringify(command);
    } catch (err) {
      return new PushgateError("bad_json", `data cannot be sent as JSON: ${err && err.message}`);
    }
    const size = utf8.encode(text).length + 24; // + room for the id
    if (size > this._opts.maxMessageSize) {
      return new PushgateError("too_large", `the message is ${size} bytes; the limit is ${this._opts.maxMessageSize}`);
    }
    return size;
  }

  /** Starts connecting (done by the constructor unless `autoConnect: false`). */
  connect() {
    this._autoConnect = false;
    if (this._active) return;
    this._active = true;
    this._attachEnvironment();
    this._scheduleRefresh();
    const nav = globalThis.navigator;
    if (nav && nav.onLine === false) this._setState("offline");
    else this._startRound();
  }

  /** Closes every connection and stops reconnecting; queued publishes reject with `closed`; rooms are left. */
  close() {
    this._autoConnect = false;
    this._queue.rejectWaiting("closed", "the client was closed");
    for (const room of [...this._rooms.values()]) room._clientStopped(null);
    if (!this._active) return;
    this._stop();
  }

  /** Stops connecting and reconnecting. @param {Error} [error] why, for the state event */
  _stop(error) {
    if (error) this._queue.rejectWaiting(/** @type {any} */ (error).code || "disconnected", error.message);
    // Nothing will carry signals any more: a pending join fails, a room's peers close.
    if (error) for (const room of [...this._rooms.values()]) room._clientStopped(error);
    this._active = false;
    clearTimeout(this._timers.refresh);
    if (this._detach) this._detach();
    this._detach = null;
    this._teardown();
    this._setState("disconnected", null, error ? { error } : {});
  }

  // -- tokens -------------------------------------------------------------------

  /** Takes a new token: its user's personal channel, its refresh. */
  _setToken(token) {
    if (token === this._token) return;
    this._token = token;
    this._claims = tokenPayload(token);
    this._refusedChannels.clear(); // a new token may grant what the old one did not
    const sub = this.user;
    const personal = sub !== null && isValidChannel(`#${sub}`) ? `#${sub}` : null;
    if (personal !== this._personal.channel) {
      if (this._personal.off) this._personal.off();
      this._personal = { channel: personal, off: personal ? this.subscribe(personal, (m) => this._direct(m)) : null };
    }
    this._scheduleRefresh();
    this._events.emit("token", { user: sub, expires: this._claims && typeof this._claims.exp === "number" ? this._claims.exp : null });
  }

  /** A message on the personal channel: `{from, data}` as a `direct` event. */
  _direct(m) {
    const d = m.data;
    if (d && typeof d === "object" && !(d instanceof Uint8Array) && "from" in d) {
      this._events.emit("direct", { from: d.from, data: d.data, message: m });
    }
  }

  /** Asks `getToken` (one call at a time); resolves with the token now held, or null. */
  _fetchToken() {
    const get = this._opts.getToken;
    if (!get) return Promise.resolve(this._token);
    if (!this._tokenFetch) {
      this._tokenFetch = Promise.resolve()
        .then(() => get())
        .then(
          (t) => {
            this._tokenFetch = null;
            if (typeof t === "string" && t) this._setToken(t);
            return typeof t === "string" && t ? t : null;
          },
          (err) => {
            this._tokenFetch = null;
            throw err instanceof Error ? err : new PushgateError("token", String(err));
          },
        );
    }
    return this._tokenFetch;
  }

  /** Whether the token held is missing or (nearly) expired, and getToken can do better. */
  _needsToken() {
    if (!this._opts.getToken) return false;
    if (!this._token) return true;
    const exp = this._claims && this._claims.exp;
    return typeof exp === "number" && exp * 1000 - now() < 1000;
  }

  /** Asks for a fresh token `tokenRefreshMargin` before `exp`. */
  _scheduleRefresh() {
    clearTimeout(this._timers.refresh);
    if (!this._opts.getToken || !this._claims) return;
    const delay = refreshDelay(this._claims.exp, now(), this._opts.tokenRefreshMargin);
    if (delay === null) return;
    // setTimeout holds at most 2^31-1 ms (about 24 days): look again then.
    const MAX = 2 ** 31 - 1;
    this._timers.refresh = setTimeout(() => (delay > MAX ? this._scheduleRefresh() : this._refresh()), Math.min(delay, MAX));
  }

  _refresh() {
    if (!this._active) return;
    const old = this._token;
    this._fetchToken().then(
      (t) => {
        if (t && t !== old) this._pushToken();
        else this._scheduleRefresh(); // nothing new yet: ask again later
      },
      (err) => {
        this._events.emit("error", err);
        clearTimeout(this._timers.refresh);
        this._timers.refresh = setTimeout(() => this._refresh(), 5000);
      },
    );
  }

  /**
   * Hands a refreshed token to the open links: an `auth` command on
   * WebSocket; the event streams reopen with it from the cursor; the polls
   * carry it on their next request.
   */
  _pushToken() {
    const token = this._token;
    for (const link of [this._link, this._candidate]) {
      if (!link || link.role === "retired") continue;
      const t = /** @type {any} */ (link.transport);
      if (t instanceof WebSocketTransport) {
        if (t._isOpen()) t.send({ type: "auth", token }).catch((err) => this._events.emit("error", err));
      } else if (t instanceof PollTransport) {
        // the next request carries the new token
      } else if (t instanceof HttpTransport && !t.closed && t._gen > 0) {
        t._reopen();
      }
    }
  }

  /**
   * The server refused the token or the user: getToken once (never with a
   * backoff); a new token reconnects at once, else the client stops, and
   * after `disconnected` emits `disconnected`. `forbidden` (or
   * `unauthorized` without a token) for a subscribing request: an `error`
   * naming the channels, which are left out from then on.
   */
  _authFailed(link, err, kind) {
    this._stopConnectedTimers();
    this._closeCandidate();
    this._queue.setConnected(false);
    const channels = /** @type {any} */ (err).channels;
    if (kind === "forbidden" || (kind === "unauthorized" && !this._token && channels)) {
      if (channels) for (const c of channels) this._refusedChannels.add(c);
      if (channels) for (const c of channels) this._rooms.get(c)?._refused(err);
      if (channels && channels.length === 1) /** @type {any} */ (err).channel = channels[0];
      this._events.emit("error", err);
      if (!channels) return this._stop(err);
      return this._startRound();
    }
    if (!this._opts.getToken) {
      this._events.emit("error", err);
      if (kind === "disconnected") this._events.emit("disconnected", err);
      return this._stop(err);
    }
    const old = this._token;
    this._setState("reconnecting", null, { attempt: this._attempt, delay: 0, error: err });
    this._fetchToken().then(
      (t) => {
        if (!this._active) return;
        // Only a different token may reconnect: the same one would be refused
        // again. At once the first time; a second refusal in a row before
        // anything was delivered backs off, so a server that refuses every
        // fresh token is not hammered.
        if (t && t !== old) return this._authRetries++ === 0 ? this._startRound() : this._backoff(err);
        this._events.emit("error", err);
        if (kind === "disconnected" || /disconnected/.test(err.message)) this._events.emit("disconnected", err);
        this._stop(err);
      },
      (e) => {
        if (!this._active) return;
        this._events.emit("error", e);
        this._backoff(err);
      },
    );
  }

  // -- connecting -------------------------------------------------------------

  _available() {
    return this._opts.transports.filter((n) => unavailableReason(n, this._opts, this._base) === null);
  }

  _isDemoted(name) {
    const until = this._demoted.get(name);
    return until !== undefined && until > now();
  }

  /**
   * One round: every available transport once, starting with the preferred
   * (the last that worked), demoted ones last. When all fail: back off.
   */
  _startRound() {
    clearTimeout(this._timers.retry);
    if (!this._needsToken()) return this._startRoundNow();
    this._fetchToken().then(
      () => {
        // With no token to give (getToken answered null) the client connects anonymously.
        if (this._active) this._startRoundNow();
      },
      (err) => {
        if (!this._active) return;
        this._events.emit("error", err);
        this._backoff(err);
      },
    );
  }

  _startRoundNow() {
    const names = this._available();
    if (names.length === 0) {
      this._events.emit("error", new PushgateError("unavailable", "no transport can run in this environment"));
      this._setState("disconnected");
      return;
    }
    const start = Math.max(0, names.indexOf(/** @type {any} */ (this._preferred)));
    const rotated = [...names.slice(start), ...names.slice(0, start)];
    this._cycle = [...rotated.filter((n) => !this._isDemoted(n)), ...rotated.filter((n) => this._isDemoted(n))];
    this._tryNext();
  }

  _tryNext() {
    const name = this._cycle.shift();
    if (!name) return this._backoff(this._lastOpenError);
    this._setState("connecting", name);
    this._link = this._openLink(name, "primary");
  }

  /** @param {Error} [error] why the connection ended, for the state event */
  _backoff(error) {
    const delay = backoffDelay(this._attempt, this._opts);
    this._attempt++;
    this._setState("reconnecting", null, error ? { attempt: this._attempt, delay, error } : { attempt: this._attempt, delay });
    this._timers.retry = setTimeout(() => this._startRound(), delay);
  }

  /** Retry at once (back online, page visible again) instead of waiting out the backoff. */
  _retryNow() {
    if (!this._active || this._state !== "reconnecting") return;
    this._startRound();
  }

  /** @returns {Link} */
  _openLink(name, role) {
    /** @type {Link} */
    const link = { transport: /** @type {any} */ (null), role, established: false, establishedAt: 0, lastSeen: now(), bound: 0, openTimer: null };
    link.transport = createTransport(name, {
      base: this._base,
      options: this._opts,
      channels: () => this._channels(),
      since: (channels) => this._tracker.cursor(channels),
      token: () => this._token,
      hooks: {
        frame: (obj) => this._onFrame(link, obj),
        dead: (err) => this._onDead(link, err),
      },
    });
    link.openTimer = setTimeout(
      () => link.transport._die(new PushgateError("disconnected", `${name} did not open within ${this._opts.openTimeout} ms`)),
      this._opts.openTimeout,
    );
    link.transport.open();
    return link;
  }

  _onFrame(link, obj) {
    link.lastSeen = now();
    const type = obj.type;
    if ((type === "subscribed" || type === "pong") && typeof obj.heartbeat === "number" && obj.heartbeat > 0) {
      this._announced(link, obj.heartbeat);
    }
    if (!link.established) this._established(link);
    if (link.role === "retired") return; // its in-flight replies were already taken
    // The connection delivers: a subscription confirmed, a poll answered, or
    // (with nothing to subscribe) the ping answered. The next drop is then a
    // new failure, not one more of a series, and is retried quickly.
    if (type === "subscribed" || type === "$cursor" || (type === "pong" && this._handlers.size === 0)) {
      this._attempt = 0;
      this._authRetries = 0;
    }
    if (type === "ping" || type === "pong") return; // signs of life, nothing more
    if (type === "$cursor") return this._learn(obj.cursor);
    if (type === "$refused") return this._subscribeRefused(obj.channel, errorFromFrame(obj.error));
    if (type === "join" || type === "leave") {
      if (this._handlers.has(obj.channel)) this._events.emit(type, { channel: obj.channel, user: obj.user ?? null, client: obj.client });
      return this._roomFrame(link, obj.channel, obj);
    }
    if (type === "signal") return this._roomFrame(link, obj.room, obj);
    if (type === "subscribed") this._roomFrame(link, obj.channel, obj);
    if (type === "authed") return;
    // An error with an id answers a command; its promise already rejected.
    if (type === "error") return obj.id === undefined ? this._events.emit("error", errorFromFrame(obj)) : undefined;
    for (const out of this._tracker.accept(obj)) {
      if (out.type === "reset") this._events.emit("reset", out);
      else this._deliver(out);
    }
  }

  /** A WebSocket subscribe was refused: said once, not asked again on this connection. */
  _subscribeRefused(channel, err) {
    /** @type {any} */ (err).channel = channel;
    this._events.emit("error", err);
    this._rooms.get(channel)?._refused(err);
  }

  _learn(cursor) {
    try {
      this._tracker.learn(cursor);
    } catch (err) {
      this._events.emit("error", err);
    }
  }

  _deliver(message) {
    const set = this._handlers.get(message.channel);
    if (set) for (const fn of [...set]) safeCall(fn, message);
    this._events.emit("message", message);
  }

  /** The first frame: the transport works end to end. */
  _established(link) {
    link.established = true;
    link.establishedAt = now();
    clearTimeout(link.openTimer);
    if (link.role === "primary") this._connected(link);
    else if (link.role === "candidate") this._promote(link);
  }

  _connected(link) {
    const name = link.transport.name;
    this._link = link;
    this._remember(name);
    this._startWatchdog();
    this._scheduleUpgrade();
    this._setState("connected", name);
    this._queueOnline(link);
    this._roomsOnLink(link);
  }

  _queueOnline(link) {
    this._queue.flush((cmd) => link.transport.send(cmd), link.transport.window, link);
    this._queue.setConnected(true);
  }

  _onDead(link, err) {
    clearTimeout(link.openTimer);
    if (link.role === "retired") return;
    if (link.role === "candidate") {
      this._candidate = null;
      return this._tryUpgradeTarget();
    }
    if (link !== this._link) return;
    this._link = null;
    const auth = authFailure(err);
    if (auth) return this._authFailed(link, err, auth);
    if (!link.established) {
      this._lastOpenError = err;
      return this._tryNext(); // fall back to the next transport
    }
    this._lost(link, err);
  }

  /** An established connection ended: reconnect on the same transport after a backoff. */
  _lost(link, err) {
    const name = link.transport.name;
    this._stopConnectedTimers();
    this._closeCandidate();
    this._queue.setConnected(false);
    // Dying soon after opening, twice in a row, is what a proxy that cuts
    // long-lived connections looks like: demote the transport for a while.
    if (now() - link.establishedAt < this._opts.stableAfter) this._unstable++;
    else this._unstable = 0;
    if (this._unstable >= 2) {
      this._unstable = 0;
      this._demoted.set(name, now() + 10 * Math.max(this._opts.upgradeInterval, 60000));
      const names = this._available();
      this._preferred = names[(names.indexOf(name) + 1) % names.length];
    }
    this._backoff(err);
  }

  _closeCandidate() {
    const c = this._candidate;
    if (!c) return;
    this._candidate = null;
    clearTimeout(c.openTimer);
    c.role = "retired";
    c.transport.close();
  }

  // -- upgrading --------------------------------------------------------------

  /** Better transports than the current one, best first. */
  _betterTransports() {
    const names = this._available();
    const current = this._link ? names.indexOf(/** @type {any} */ (this._link.transport.name)) : -1;
    return names.slice(0, Math.max(0, current)).filter((n) => !this._isDemoted(n));
  }

  _scheduleUpgrade() {
    clearTimeout(this._timers.upgrade);
    if (!this._opts.upgradeInterval || this._betterTransports().length === 0) return;
    this._timers.upgrade = setTimeout(() => {
      this._upgradeTargets = this._betterTransports();
      this._tryUpgradeTarget();
    }, this._opts.upgradeInterval);
  }

  /**
   * Opens the next better transport alongside the current one. Both deliver
   * into the same tracker, which drops whatever one of them already delivered,
   * so the overlap neither loses nor duplicates messages.
   */
  _tryUpgradeTarget() {
    if (this._state !== "connected") return;
    // A new connection is a new member id: every peer connection of a room
    // would be torn down and negotiated again, so a working room stays put.
    if (this._inRoom()) return this._scheduleUpgrade();
    const name = this._upgradeTargets.shift();
    if (!name) return this._scheduleUpgrade();
    this._candidate = this._openLink(name, "candidate");
  }

  _promote(link) {
    const old = this._link;
    this._candidate = null;
    link.role = "primary";
    this._link = link;
    if (old) this._retire(old);
    this._startWatchdog();
    this._remember(link.transport.name);
    this._setState("connected", link.transport.name);
    this._queueOnline(link);
    this._roomsOnLink(link);
    this._scheduleUpgrade();
  }

  /** Stops receiving on a replaced link but lets its pending replies arrive. */
  _retire(link) {
    link.role = "retired";
    const t = /** @type {any} */ (link.transport);
    if (t instanceof WebSocketTransport && t.inFlight > 0) {
      t.update([]); // unsubscribe everything; replies still come back
      const deadline = now() + this._opts.openTimeout;
      const check = setInterval(() => {
        if (t.inFlight === 0 || now() > deadline || t.closed) {
          clearInterval(check);
          t.close();
        }
      }, 50);
    } else {
      t.close(); // HTTP commands are separate requests; closing the stream does not touch them
    }
  }

  _remember(name) {
    this._preferred = name;
    const s = this._opts.rememberTransport && storage();
    if (!s) return;
    try {
      s.setItem(this._storageKey(), name);
    } catch {
      /* quota or privacy mode: remembering is an optimisation */
    }
  }

  _storageKey() {
    return `pushgate:transport:${this._base}`;
  }

  // -- liveness ---------------------------------------------------------------

  /**
   * The server announced its heartbeat `h` (ms) on this link: it sends
   * something at least every `h`, so a silence of `h` plus a margin for
   * network jitter means the connection is dead.
   */
  _announced(link, h) {
    const bound = h + Math.max(h / 2, 1000);
    if (bound === link.bound) return;
    link.bound = bound;
    if (link === this._link && link.established) this._startWatchdog(); // a new pace
  }

  /** The link's silence bound: announced by the server, else `heartbeatTimeout`. */
  _bound(link) {
    return link.bound || this._opts.heartbeatTimeout;
  }

  /** Checks the primary link often enough that detection lags its bound by at most a second. */
  _startWatchdog() {
    clearInterval(this._timers.watchdog);
    if (!this._link) return;
    const every = Math.max(100, Math.min(1000, this._bound(this._link) / 4));
    this._timers.watchdog = setInterval(() => this._checkLiveness(), every);
  }

  /** Kills the primary link when it has been silent too long. */
  _checkLiveness() {
    const link = this._link;
    if (!link || !link.established) return;
    const at = now();
    if (link.transport.isDead(link.lastSeen, at, this._bound(link))) {
      link.transport._die(new PushgateError("disconnected", `no sign of life for ${at - link.lastSeen} ms`));
    }
  }

  _stopConnectedTimers() {
    clearTimeout(this._timers.upgrade);
    clearInterval(this._timers.watchdog);
  }

  /** Closes every link and timer (close(), going offline). */
  _teardown() {
    clearTimeout(this._timers.retry);
    this._stopConnectedTimers();
    this._closeCandidate();
    const link = this._link;
    this._link = null;
    if (link) {
      clearTimeout(link.openTimer);
      link.role = "retired";
      link.transport.close();
    }
    this._queue.setConnected(false);
  }

  /** Listens to online/offline and page visibility; returns nothing, sets `_detach`. */
  _attachEnvironment() {
    const g = globalThis;
    const doc = g.document;
    const onOffline = () => {
      this._teardown();
      this._setState("offline");
    };
    const onOnline = () => {
      if (this._state !== "offline" && this._state !== "reconnecting") return;
      this._attempt = 0;
      this._startRound();
    };
    // A background tab runs timers late (or about once a minute): on return,
    // judge the link at once, and do not wait out a backoff.
    const onVisible = () => {
      if (doc.visibilityState !== "visible") return;
      this._checkLiveness();
      this._retryNow();
    };
    const canListen = typeof g.addEventListener === "function";
    if (canListen) {
      g.addEventListener("offline", onOffline);
      g.addEventListener("online", onOnline);
    }
    if (doc && typeof doc.addEventListener === "function") doc.addEventListener("visibilitychange", onVisible);
    this._detach = () => {
      if (canListen) {
        g.removeEventListener("offline", onOffline);
        g.removeEventListener("online", onOnline);
      }
      if (doc && typeof doc.removeEventListener === "function") doc.removeEventListener("visibilitychange", onVisible);
    };
  }

  // -- channel set --------------------------------------------------------------

  /** The channels to subscribe: every handled one the server has not refused. */
  _channels() {
    return [...this._handlers.keys()].filter((c) => !this._refusedChannels.has(c));
  }

  /** Batches subscribe/unsubscribe calls of one tick into one update per link. */
  _scheduleSync() {
    if (this._syncScheduled) return;
    this._syncScheduled = true;
    queueMicrotask(() => {
      this._syncScheduled = false;
      const channels = this._channels();
      for (const c of this._memberships.keys()) if (!channels.includes(c)) this._memberships.delete(c);
      for (const link of [this._link, this._candidate]) {
        if (link && link.role !== "retired") link.transport.update(channels);
      }
    });
  }

  // -- rooms (WebRTC signaling) -----------------------------------------------

  /** `pg.rtc.join`. @param {string} name @param {RoomOptions} [options] */
  async _joinRoom(name, options = {}) {
    if (!isValidChannel(name)) throw new TypeError(`invalid room name ${JSON.stringify(name)}`);
    const { media = null, dataChannel = true } = options || {};
    const Pc = this._opts.RTCPeerConnection;
    if (typeof Pc !== "function") throw new PushgateError("unavailable", "WebRTC is not available here (no RTCPeerConnection)");
    if (this._rooms.has(name)) throw new PushgateError("bad_request", `already in room ${name}: leave it first`);
    const held = this._opts.transports.filter((t) => HELD_TRANSPORTS.has(t));
    if (held.length === 0) throw noRoomTransport(this._opts.transports.join(", "));
    if (this.transport && !HELD_TRANSPORTS.has(this.transport)) throw noRoomTransport(this.transport);
    const room = new RtcRoom(this, name, Pc, dataChannel);
    this._rooms.set(name, room);
    await room._start(media);
    return room;
  }

  /**
   * Keeps the membership of a room channel from the primary link's frames
   * (`subscribed` with `room`, then `join`/`leave`), and hands the frame to
   * the room joined there. Kept even without a room object, so a join on a
   * channel the application already subscribed to starts from the truth.
   */
  _roomFrame(link, channel, frame) {
    if (typeof channel !== "string") return;
    let m = this._memberships.get(channel);
    if (frame.type === "subscribed") {
      const r = frame.room;
      if (r && typeof r === "object") {
        m = {
          link,
          client: String(r.client),
          clientKey: typeof r.client_key === "string" ? r.client_key : null,
          iceServers: Array.isArray(r.ice_servers) ? r.ice_servers : [],
          members: new Map((Array.isArray(r.members) ? r.members : []).map((x) => [String(x.client), x.user ?? null])),
        };
        this._memberships.set(channel, m);
      } else {
        this._memberships.delete(channel);
        m = undefined;
      }
    } else if (!m || m.link !== link) {
      return; // not a room, or news from a connection that is not ours any more
    } else if (frame.type === "join" && String(frame.client) !== m.client) {
      m.members.set(String(frame.client), frame.user ?? null);
    } else if (frame.type === "leave") {
      m.members.delete(String(frame.client));
    }
    const room = this._rooms.get(channel);
    if (room) room._frame(frame, m);
  }

  /** The primary link changed: a poll cannot be in a room. */
  _roomsOnLink(link) {
    const name = link.transport.name;
    if (HELD_TRANSPORTS.has(name)) return;
    for (const room of [...this._rooms.values()]) room._noRoomTransport(noRoomTransport(name));
  }

  /** Whether a room has its membership on the current link. */
  _inRoom() {
    for (const room of this._rooms.values()) if (room._link && room._link === this._link) return true;
    return false;
  }

  /**
   * Sends one `signal` for `room` on the link its membership is on. Over
   * the HTTP transports the command goes by `POST /command` and names the
   * connection it is from (`from`, `client_key`). Returns when the next
   * signal to the same peer may go: at once on a WebSocket (one socket keeps
   * order), after the reply over HTTP (separate requests could overtake).
   * Refusals go to `room._signalFailed`. A signal with no connection to go
   * on is dropped: the next membership rebuilds every peer anyway.
   * @returns {Promise<void> | undefined}
   */
  _sendSignal(room, to, data) {
    const link = room._link;
    if (!link || link !== this._link || link.transport.closed) return undefined;
    const t = link.transport;
    const command = { type: "signal", room: room.name, to, data };
    const ordered = t instanceof WebSocketTransport;
    let reply;
    try {
      reply = t.send(ordered ? command : { ...command, from: room.client, client_key: room._clientKey });
    } catch {
      return undefined; // not connected: dropped (see above)
    }
    const settled = reply.then(
      () => {},
      (err) => room._signalFailed(to, err),
    );
    return ordered ? undefined : settled;
  }

  // -- state ------------------------------------------------------------------

  /**
   * @param {State} state
   * @param {string | null} [transport]
   * @param {{attempt?: number, delay?: number, error?: Error}} [extra]
   */
  _setState(state, transport = null, extra = {}) {
    if (state === this._state && transport === this._stateTransport && state !== "reconnecting") return;
    this._state = state;
    this._stateTransport = transport;
    /** @type {any} */
    const change = { state, ...extra };
    if (transport) change.transport = transport;
    this._events.emit("state", change);
  }
}

// ---------------------------------------------------------------------------
// WebRTC rooms: a mesh of peer connections, signaled through pushgate
//
// A room is a channel whose namespace has `signal = true` (every `room:NAME`
// by default). Its `subscribed` reply names our connection (`client`), the
// other members and the ICE servers; `join`/`leave` follow. Each pair of
// members holds one RTCPeerConnection, negotiated with the "perfect
// negotiation" pattern of the WebRTC spec: both ends may make an offer at
// any time; when two offers cross, the polite end drops its own and answers,
// the impolite end ignores the other's (the very first offer of a pair is
// the newcomer's: see RtcPeer). Offers, answers and ICE candidates travel
// as `signal` commands that the server relays to one member.
// ---------------------------------------------------------------------------

/** Transports whose connection the server holds, so it can be a room member (a poll is not). */
const HELD_TRANSPORTS = new Set(["websocket", "sse", "stream", "iframe"]);

/** @param {string} what the transport(s) that cannot carry a room */
function noRoomTransport(what) {
  return new PushgateError(
    "unavailable",
    `a room needs a held connection (websocket, sse, stream or iframe), not ${what}: poll and longpoll connections are not room members`,
  );
}

/**
 * @typedef {object} RoomOptions
 * @property {MediaStream | MediaStreamConstraints | boolean | null} [media] a stream to send to every peer, or constraints for getUserMedia (`true`: audio and video); none by default
 * @property {string | boolean} [dataChannel] the data channel's label; `false` for none (default `"pushgate"`)
 */

/** A stream from `media`: the caller's own, or a new one from getUserMedia (`owned`, so stopped by the room). */
async function acquireMedia(media) {
  if (!media) return { stream: null, owned: false };
  if (typeof media.getTracks === "function") return { stream: media, owned: false };
  const devices = globalThis.navigator && globalThis.navigator.mediaDevices;
  if (!devices || typeof devices.getUserMedia !== "function") {
    throw new PushgateError("unavailable", "no camera or microphone here (getUserMedia needs a secure context: https or localhost)");
  }
  const constraints = media === true ? { audio: true, video: true } : media;
  return { stream: await devices.getUserMedia(constraints), owned: true };
}

function stopTracks(stream) {
  for (const track of stream.getTracks()) track.stop();
}

/**
 * A joined room: one peer per other member. Made by `pg.rtc.join`.
 *
 * Events (`room.on(type, fn)` → `off()`): `peer` (a peer was added: a member
 * joined, or the mesh was rebuilt), `open` (a peer's data channel opened),
 * `message` ({peer, data}), `stream` ({peer, stream}: the peer's media
 * stream arrived, or a new one replaced it), `track` ({peer, track, stream}:
 * each remote track), `state` ({peer, state}: its connectionState), `leave`
 * (a peer was removed; its `closeReason` says why), `rejoin` ({client}: our
 * connection changed and the mesh was rebuilt), `error`.
 */
export class RtcRoom {
  /**
   * @param {Pushgate} pg
   * @param {string} name
   * @param {any} Pc the RTCPeerConnection constructor
   * @param {string | boolean} dataChannel
   */
  constructor(pg, name, Pc, dataChannel) {
    this._pg = pg;
    /** The room's channel. */
    this.name = name;
    this._Pc = Pc;
    this._label = dataChannel === false ? null : typeof dataChannel === "string" ? dataChannel : "pushgate";
    this._events = new Emitter();
    /** The other members' peers, by client id. @type {Map<string, RtcPeer>} */
    this.peers = new Map();
    /** Our connection's id in the room; null while not a member. @type {string | null} */
    this.client = null;
    this._clientKey = null;
    /** The ICE servers the server handed out (RTCConfiguration.iceServers). @type {any[]} */
    this.iceServers = [];
    /** What we send to every peer. @type {MediaStream | null} */
    this.localStream = null;
    this._ownStream = false;
    /** the link our membership is on: frames and signals of any other are stale */
    this._link = null;
    /** ids that left: a late signal from one of them must not create a peer again */
    this._gone = new Set();
    /** @type {{resolve: () => void, reject: (e: Error) => void} | null} */
    this._joining = null;
    this._unsubscribe = null;
    /** true once left (or the client closed): for good */
    this.left = false;
  }

  /** @returns {() => void} removes the listener */
  on(type, fn) {
    this._events.on(type, fn);
    return () => this._events.off(type, fn);
  }

  off(type, fn) {
    this._events.off(type, fn);
  }

  /**
   * Sends `data` on every open data channel (peer to peer: the server never
   * sees it). A string, Blob, ArrayBuffer or ArrayBufferView.
   * @returns {number} how many peers it went to
   */
  send(data) {
    let n = 0;
    for (const peer of this.peers.values()) if (peer.send(data)) n++;
    return n;
  }

  /**
   * Sends `media` to every peer from now on, instead of the current local
   * stream (each peer renegotiates). `null` stops sending. A stream the room
   * got from getUserMedia itself is stopped when replaced.
   * @param {MediaStream | MediaStreamConstraints | boolean | null} media
   * @returns {Promise<MediaStream | null>}
   */
  async setMedia(media) {
    if (this.left) throw new PushgateError("closed", `room ${this.name} was left`);
    const { stream, owned } = await acquireMedia(media);
    if (this.left) {
      if (owned) stopTracks(stream);
      throw new PushgateError("closed", `room ${this.name} was left`);
    }
    const old = this.localStream;
    const oldOwned = this._ownStream;
    this.localStream = stream;
    this._ownStream = owned;
    for (const peer of this.peers.values()) peer._useStream(stream);
    if (old && oldOwned && old !== stream) stopTracks(old);
    return stream;
  }

  /** Leaves: unsubscribes, closes every peer, stops the media the room acquired itself. */
  leave() {
    this._end(null, "closed");
  }

  /** Gets the media, subscribes, and resolves once the server says we are a member. */
  async _start(media) {
    try {
      if (media) await this.setMedia(media);
      await new Promise((resolve, reject) => {
        this._joining = { resolve, reject };
        if (this.left) return reject(new PushgateError("closed", "the client was closed"));
        this._unsubscribe = this._pg.subscribe(this.name, () => {});
        // Already subscribed (by the application): no new `subscribed` will come.
        const m = this._pg._memberships.get(this.name);
        if (m && m.link === this._pg._link) this._attach(m);
      });
    } catch (err) {
      this._end(err, "closed");
      throw err;
    }
  }

  /**
   * Ends the room for good. `error`: rejects a pending join, or is emitted.
   * @param {Error | null} error
   * @param {string} reason each peer's closeReason
   */
  _end(error, reason) {
    if (this.left) return;
    this.left = true;
    if (this._pg._rooms.get(this.name) === this) this._pg._rooms.delete(this.name);
    if (this._unsubscribe) this._unsubscribe();
    this._unsubscribe = null;
    for (const id of [...this.peers.keys()]) this._removePeer(id, reason);
    this._link = null;
    this.client = null;
    if (this.localStream && this._ownStream) stopTracks(this.localStream);
    const joining = this._joining;
    this._joining = null;
    if (joining) joining.reject(error || new PushgateError("closed", `left room ${this.name} before joining it`));
    else if (error) this._events.emit("error", error);
  }

  /** The client closed (error null) or stopped for good. */
  _clientStopped(error) {
    this._end(error || (this._joining ? new PushgateError("closed", "the client was closed") : null), "closed");
  }

  /** The server refused the room's subscription. */
  _refused(err) {
    this._end(err, "closed");
  }

  /** The client now runs on a poll: no membership until a held transport is back. */
  _noRoomTransport(err) {
    if (this.left) return;
    if (this._joining) return this._end(err, "closed");
    for (const id of [...this.peers.keys()]) this._removePeer(id, "reconnect");
    this._link = null;
    this.client = null;
    this._events.emit("error", err);
  }

  /** A room frame from the primary link; `m` is the membership it updated. */
  _frame(frame, m) {
    if (this.left) return;
    if (frame.type === "subscribed") {
      if (!m) {
        return this._end(
          new PushgateError("bad_request", `${this.name} is not a room: its namespace needs signal = true (every room:NAME channel is one by default)`),
          "closed",
        );
      }
      return this._attach(m);
    }
    if (!m || m.link !== this._link) return;
    const id = String(frame.type === "signal" ? frame.from : frame.client);
    if (id === this.client) return;
    if (frame.type === "join") {
      this._gone.delete(id);
      if (!this.peers.has(id)) this._addPeer(id, frame.user ?? null);
    } else if (frame.type === "leave") {
      this._gone.add(id);
      this._removePeer(id, "left");
    } else if (frame.type === "signal" && !this._gone.has(id)) {
      // A signal may overtake the sender's `join` (another path through the
      // server): its peer is made now.
      const peer = this.peers.get(id) || this._addPeer(id, frame.user ?? null);
      if (peer) peer._onSignal(frame.data);
    }
  }

  /** Takes a membership: the first, or a new one after our connection changed. */
  _attach(m) {
    const changed = m.client !== this.client;
    this._link = m.link;
    this._clientKey = m.clientKey;
    this.iceServers = m.iceServers;
    if (changed) {
      // A new connection is a new member: the others drop our old id and
      // meet the new one, so every peer starts over.
      for (const id of [...this.peers.keys()]) this._removePeer(id, "reconnect");
      this._gone.clear();
      this.client = m.client;
    }
    const joining = this._joining;
    this._joining = null;
    if (changed && !joining) this._events.emit("rejoin", { client: this.client });
    for (const id of [...this.peers.keys()]) if (!m.members.has(id)) this._removePeer(id, "left");
    // We are the newcomer to these members: we make the first offers.
    for (const [id, user] of m.members) if (!this.peers.has(id)) this._addPeer(id, user, true);
    if (joining) joining.resolve();
  }

  /**
   * @param {string} id @param {string | null} user
   * @param {boolean} [opens] we make the first offer (they were in the room before us)
   * @returns {RtcPeer | null}
   */
  _addPeer(id, user, opens = false) {
    let peer;
    try {
      peer = new RtcPeer(this, id, user, opens);
    } catch (err) {
      this._peerError(id, err); // e.g. an ICE server URL the browser refuses
      return null;
    }
    this.peers.set(id, peer);
    this._events.emit("peer", peer);
    return peer;
  }

  _removePeer(id, reason) {
    const peer = this.peers.get(id);
    if (!peer) return;
    this.peers.delete(id);
    peer._close(reason);
    this._events.emit("leave", peer);
  }

  /** A refused signal. */
  _signalFailed(to, err) {
    // The target left, or our membership ended: its `leave`, or our new
    // membership, follows and settles the peer.
    if (["unknown_client", "not_in_room", "disconnected"].includes(err && err.code)) return;
    if (err && typeof err === "object") err.peer = to;
    this._events.emit("error", err);
  }

  /** A negotiation step failed. */
  _peerError(id, err) {
    const e = new PushgateError("webrtc", `peer ${id}: ${(err && err.message) || err}`);
    /** @type {any} */ (e).peer = id;
    /** @type {any} */ (e).cause = err;
    this._events.emit("error", e);
  }
}

/**
 * One other member of a room and our RTCPeerConnection to it.
 *
 * The first negotiation is opened by the newcomer (the member that found
 * the other in its `members` list); the other end waits for that offer
 * instead of offering at the same moment. Perfect negotiation would settle
 * the crossing offers, but the polite end's rollback then lands while its
 * first ICE gathering runs, and Chromium (156) gathers nothing after it: the
 * pair never connects. Every later negotiation (media, ICE restarts) is
 * perfect negotiation, from either end.
 */
export class RtcPeer {
  /** @param {RtcRoom} room @param {string} id @param {string | null} user @param {boolean} opens */
  constructor(room, id, user, opens) {
    this._room = room;
    /** The member's client id. */
    this.id = id;
    /** Its user id; null when anonymous. */
    this.user = user;
    // Both ends compare the same two ids, so exactly one of them yields when offers cross.
    /** Whether this end yields when offers cross. */
    this.polite = /** @type {string} */ (room.client) < id;
    const pc = new room._Pc({ iceServers: room.iceServers });
    /** @type {RTCPeerConnection} */
    this.pc = pc;
    /** The data channel (negotiated, id 0), or null. @type {RTCDataChannel | null} */
    this.channel = null;
    /** What the peer sends us; null until its first track. @type {MediaStream | null} */
    this.stream = null;
    this.closed = false;
    /** Why it closed: "left", "reconnect" or "closed". @type {string | null} */
    this.closeReason = null;
    this._makingOffer = false;
    this._ignoreOffer = false;
    this._answerPending = false;
    /** waiting for the newcomer's first offer */
    this._awaitingOffer = !opens;
    /** a negotiationneeded came while waiting */
    this._deferred = false;
    /** the previous signal's sending, to keep them in order */
    this._sending = Promise.resolve();
    /** @type {Map<MediaStreamTrack, RTCRtpSender>} */
    this._senders = new Map();
    pc.onnegotiationneeded = () => this._negotiate();
    pc.onicecandidate = (e) => this._signal({ candidate: e.candidate || null });
    pc.ontrack = (e) => this._track(e);
    pc.onconnectionstatechange = () => this._stateChanged();
    pc.oniceconnectionstatechange = () => pc.iceConnectionState === "failed" && this._restartIce();
    // Negotiated with the same id on both ends: each has its channel at
    // once, without waiting for the other's `datachannel` event.
    if (room._label !== null) this._useChannel(pc.createDataChannel(room._label, { negotiated: true, id: 0 }));
    if (room.localStream) this._useStream(room.localStream);
    // With nothing of our own to negotiate no negotiationneeded comes, but
    // the other end waits for our offer: an empty one lets it offer its own.
    if (opens && !this.channel && this._senders.size === 0) queueMicrotask(() => this._negotiate());
  }

  /** The connection's state (RTCPeerConnection.connectionState). */
  get state() {
    return this.pc.connectionState;
  }

  /**
   * Sends on the data channel, if it is open.
   * @param {string | Blob | ArrayBuffer | ArrayBufferView} data
   * @returns {boolean} whether it was sent
   */
  send(data) {
    const ch = this.channel;
    if (!ch || ch.readyState !== "open") return false;
    ch.send(/** @type {any} */ (data));
    return true;
  }

  _useChannel(ch) {
    this.channel = ch;
    ch.binaryType = "arraybuffer";
    ch.onopen = () => this._room._events.emit("open", this);
    ch.onmessage = (e) => this._room._events.emit("message", { peer: this, data: e.data });
  }

  /** Sends `stream`'s tracks instead of the current ones (null: none). */
  _useStream(stream) {
    if (this.closed) return;
    const tracks = stream ? stream.getTracks() : [];
    for (const [track, sender] of this._senders) {
      if (tracks.includes(track)) continue;
      this._senders.delete(track);
      this.pc.removeTrack(sender);
    }
    for (const track of tracks) if (!this._senders.has(track)) this._senders.set(track, this.pc.addTrack(track, stream));
  }

  _track(e) {
    let stream = e.streams && e.streams[0];
    if (!stream) {
      // A track sent without a stream: gather such tracks in one of our own.
      stream = this.stream || new MediaStream();
      stream.addTrack(e.track);
    }
    const fresh = stream !== this.stream;
    this.stream = stream;
    if (fresh) this._room._events.emit("stream", { peer: this, stream });
    this._room._events.emit("track", { peer: this, track: e.track, stream });
  }

  _stateChanged() {
    const state = this.pc.connectionState;
    this._room._events.emit("state", { peer: this, state });
    if (state === "failed") this._restartIce();
  }

  /** A failed connection gets new ICE credentials; negotiationneeded turns that into an offer. */
  _restartIce() {
    if (!this.closed && typeof this.pc.restartIce === "function") this.pc.restartIce();
  }

  /** Queues one signal to this peer, after the previous one. */
  _signal(data) {
    const room = this._room;
    this._sending = this._sending.then(() => (this.closed ? undefined : room._pg._sendSignal(room, this.id, data)));
  }

  /** negotiationneeded: offer whatever changed. */
  async _negotiate() {
    // One offer at a time: a change made meanwhile is offered once this one
    // is answered (the browser fires negotiationneeded again if need be).
    if (this.closed || this._makingOffer) return;
    if (this._awaitingOffer) {
      this._deferred = true;
      return;
    }
    try {
      this._makingOffer = true;
      // Without an argument, the right description for the state: an offer,
      // or (if the other's offer came in meanwhile) the answer.
      await this.pc.setLocalDescription();
      this._signal({ description: this.pc.localDescription });
    } catch (err) {
      if (!this.closed) this._room._peerError(this.id, err);
    } finally {
      this._makingOffer = false;
    }
  }

  /** A signal from the peer: `{description}` or `{candidate}`. */
  async _onSignal(data) {
    if (this.closed || !data || typeof data !== "object") return;
    const pc = this.pc;
    try {
      if (data.description) {
        const description = data.description;
        // Ready for an offer: not making one, and stable (or about to be,
        // once the answer being applied is in).
        const ready = !this._makingOffer && (pc.signalingState === "stable" || this._answerPending);
        const collision = description.type === "offer" && !ready;
        this._ignoreOffer = !this.polite && collision;
        if (this._ignoreOffer) return;
        this._answerPending = description.type === "answer";
        try {
          // On the polite end, an offer that collides rolls ours back first.
          await pc.setRemoteDescription(description);
        } finally {
          this._answerPending = false;
        }
        if (description.type === "offer") {
          await pc.setLocalDescription();
          this._signal({ description: pc.localDescription });
          if (this._awaitingOffer) this._firstOfferAnswered();
        }
      } else if ("candidate" in data) {
        // Judged on arrival: by the time adding fails, the answer to our own
        // offer may have come in and cleared the flag.
        const ignoring = this._ignoreOffer;
        try {
          // null: the end of the peer's candidates.
          await pc.addIceCandidate(data.candidate || undefined);
        } catch (err) {
          // Candidates of an offer we ignored cannot be added: expected.
          if (!ignoring) throw err;
        }
      }
    } catch (err) {
      if (!this.closed) this._room._peerError(this.id, err);
    }
  }

  /**
   * The newcomer's first offer is answered. What it did not cover of ours
   * (its end without a data channel, tracks of a kind it did not offer) is
   * still to negotiate, and the browser does not fire negotiationneeded
   * again for a need it already announced: offer it now.
   */
  _firstOfferAnswered() {
    this._awaitingOffer = false;
    const pc = this.pc;
    const unsent =
      (this.channel !== null && !pc.sctp) ||
      pc.getTransceivers().some((t) => t.sender.track && t.currentDirection !== "sendrecv" && t.currentDirection !== "sendonly");
    if (this._deferred && unsent) this._negotiate();
  }

  _close(reason) {
    if (this.closed) return;
    this.closed = true;
    this.closeReason = reason;
    const pc = this.pc;
    pc.onnegotiationneeded = pc.onicecandidate = pc.ontrack = pc.onconnectionstatechange = pc.oniceconnectionstatechange = null;
    if (this.channel) this.channel.onopen = this.channel.onmessage = null;
    pc.close(); // closes the data channel too
  }
}

export default Pushgate;
