// Type declarations for pushgate.js (hand-written; keep in step with the file).

/** Every transport the client knows. */
export type TransportName = "websocket" | "sse" | "stream" | "longpoll" | "poll" | "iframe";

/** Every transport, best first. */
export const TRANSPORTS: readonly TransportName[];

/** The default `options.transports`: websocket, sse, longpoll, poll, iframe. */
export const DEFAULT_TRANSPORTS: readonly TransportName[];

export type State = "connecting" | "connected" | "reconnecting" | "disconnected" | "offline";

/** Where a client stands in one channel. */
export interface Position {
  /** The channel's history lifetime id (1–32 of `A-Z a-z 0-9 - _`). */
  epoch: string;
  /** The last offset processed; 0 is "before the first message". */
  offset: number;
}

/** A published message, as every transport delivers it. */
export interface Message<T = unknown> {
  type: "message";
  channel: string;
  offset: number;
  epoch: string;
  /** The publisher's JSON value; a `Uint8Array` when `encoding` is `"binary"`. */
  data: T;
  /** The publisher's event name, when it gave one. */
  event?: string;
  /** Present for binary publications, on every transport: `data` is then a `Uint8Array`. */
  encoding?: "binary";
  /** The server may add fields; ignore what you do not know. */
  [field: string]: unknown;
}

/** Messages between the previous position and `offset` are gone: reload your state. */
export interface ResetEvent {
  type: "reset";
  channel: string;
  epoch: string;
  /** The client now stands here; live messages follow. */
  offset: number;
}

/** The server's reply to a publish. */
export interface Published {
  type: "published";
  channel: string;
  epoch: string;
  offset: number;
  /** The command id the client used (WebSocket and /command echo it). */
  id?: number | string;
}

export interface StateChange {
  state: State;
  /** `connecting`: the transport being tried; `connected`: the one in use. */
  transport?: TransportName;
  /** `reconnecting`: backoff attempts since a connection last delivered (1, 2, …). */
  attempt?: number;
  /** `reconnecting`: ms until the next try. */
  delay?: number;
  /** `reconnecting`: why the connection ended or could not open, when known. */
  error?: Error;
}

export interface PushgateOptions {
  /** Tried in this order. Default `["websocket", "sse", "longpoll", "poll", "iframe"]`. */
  transports?: TransportName[];
  /** ms for a transport to deliver its first frame before the next is tried. Default 5000. */
  openTimeout?: number;
  /** Backoff ceiling of the first `fastRetries` attempts, ms; later ones double from it. Default 1000. */
  minDelay?: number;
  /** Backoff ceiling, ms. Default 30000. */
  maxDelay?: number;
  /** Reconnect attempts capped at `minDelay` before the ceiling starts doubling. Default 4. */
  fastRetries?: number;
  /**
   * A transport whose connections die twice in a row within this many ms of
   * opening is demoted (tried last, not upgraded to). Default 10000. (The
   * backoff resets when a connection delivers, not after this.)
   */
  stableAfter?: number;
  /**
   * ms without a sign of life that means a dead connection, for servers that
   * do not announce their heartbeat. An announced interval `H` replaces it:
   * the bound is then `H + max(H/2, 1000)`. Default 45000.
   */
  heartbeatTimeout?: number;
  /** ms between short polls. Default 2000. */
  pollInterval?: number;
  /** ms the server holds a long poll (sent as `timeout=`). Default 25000. */
  longpollTimeout?: number;
  /** ms between tries of a better transport while connected; 0 never upgrades. Default 60000. */
  upgradeInterval?: number;
  /** Publishes kept while disconnected, at most `max` (default 100); `false` rejects them with `offline`. */
  offlineQueue?: { max?: number } | boolean;
  /** Bytes; bigger publishes reject with `too_large` without being sent. Default 65536. */
  maxMessageSize?: number;
  /** Publisher event names to listen for on SSE (EventSource only hands over names it listens for). Default []. */
  sseEvents?: string[];
  /** A saved `pg.cursor()`: subscriptions to its channels resume after it. Default "". */
  cursor?: string;
  /** Start with the transport that last worked in this tab (sessionStorage). Default true. */
  rememberTransport?: boolean;
  /** Connect right away (in a microtask). Default true; otherwise call `connect()`. */
  autoConnect?: boolean;
  /** WebSocket constructor to use. Default `globalThis.WebSocket`. */
  WebSocket?: unknown;
  /** EventSource constructor to use. Default `globalThis.EventSource`. */
  EventSource?: unknown;
  /** fetch to use. Default `globalThis.fetch`. */
  fetch?: typeof fetch;
  /**
   * A JWT for the server. Sent as `?token=` on the WebSocket URL, the
   * EventSource URL and the iframe's src, and as `Authorization: Bearer` on
   * fetch to the page's own origin (`?token=` to another origin). Its `sub`
   * (read without verifying) names the user, whose personal channel `#<sub>`
   * is subscribed by itself. Default null: anonymous.
   */
  token?: string | null;
  /**
   * Called for a token before connecting (when there is none), about
   * `tokenRefreshMargin` before its `exp`, and when the server says it expired
   * (close 4002, stream end `expired`, 401 `token_expired`) or was cut off
   * (close 4003, end `disconnected`). Return null when there is none to give.
   */
  getToken?: (() => Promise<string | null> | string | null) | null;
  /** ms before the token's `exp` to ask `getToken` for a fresh one (at most half the time left). Default 60000. */
  tokenRefreshMargin?: number;
  /** RTCPeerConnection constructor for `pg.rtc`. Default `globalThis.RTCPeerConnection`. */
  RTCPeerConnection?: unknown;
}

/** Someone subscribed to (`join`) or left (`leave`) a channel whose namespace has join/leave on. */
export interface PresenceChange {
  channel: string;
  /** The user id; null for an anonymous subscriber. */
  user: string | null;
  /** The connection's id (opaque). */
  client: string;
}

/** Who is subscribed to a channel. */
export interface Presence {
  channel: string;
  /** Sorted by user id; `clients` are the user's connection ids. */
  users: { user: string; clients: string[] }[];
  /** Anonymous subscribers, counted, not listed. */
  anonymous: number;
  /** In a room: every member connection (you too, anonymous ones too), sorted by client id. */
  members?: { client: string; user: string | null }[];
}

/** A direct message, from a message on the personal channel `#<you>`. */
export interface DirectMessage<T = unknown> {
  /** The sending user; null when the application's backend sent it (`POST /api/send`). */
  from: string | null;
  data: T;
  /** The message as it arrived on the personal channel (offset, epoch, …). */
  message: Message<{ from: string | null; data: T }>;
}

/** The answer to `send`: recipients with a connection on the server, and the others. */
export interface Sent {
  online: string[];
  offline: string[];
}

export interface PushgateEvents {
  state: StateChange;
  message: Message;
  reset: ResetEvent;
  error: PushgateError;
  /** The number of publishes queued or awaiting their reply. */
  pending: number;
  join: PresenceChange;
  leave: PresenceChange;
  direct: DirectMessage;
  /** The server cut this user off (close 4003, end `disconnected`) and getToken had no new token: the client stopped. */
  disconnected: PushgateError;
  /** A new token was taken (the first, or a refresh). */
  token: { user: string | null; expires: number | null };
}

/**
 * An error with a machine-readable code: the server's (`invalid_channel`,
 * `too_large`, `forbidden`, …) or the client's (`offline`, `queue_full`,
 * `disconnected`, `closed`, `unavailable`, `bad_json`).
 */
export class PushgateError extends Error {
  constructor(code: string, message: string, frame?: object);
  readonly name: "PushgateError";
  code: string;
  /** The server's error frame, when there was one. */
  frame: object | undefined;
  /** For a refused subscription (`forbidden`, `unauthorized`): the channel. */
  channel?: string;
  /** For a refused subscribing HTTP request: the channels it was for. */
  channels?: string[];
  /** The WebSocket close code, when a close ended the connection. */
  closeCode?: number;
  /** The event stream's `end` reason, when the server ended it. */
  endReason?: string;
}

export class Pushgate {
  /**
   * @param baseUrl e.g. `"http://127.0.0.1:7070"`; `""` for the page's origin.
   *   A path prefix is kept (`"https://example.com/push"`).
   */
  constructor(baseUrl?: string, options?: PushgateOptions);

  readonly state: State;
  /** The transport in use while connected, else null. */
  readonly transport: TransportName | null;
  /** Publishes queued or awaiting their reply. */
  readonly pending: number;
  /** The user the token names (its `sub`, not verified), or null. */
  readonly user: string | null;

  /** `base64url(channel).epoch.offset` per subscribed channel with a known position, joined by `~`. */
  cursor(): string;

  /** @returns a function that removes the listener */
  on<K extends keyof PushgateEvents>(type: K, listener: (event: PushgateEvents[K]) => void): () => void;
  /** Removes one listener, or all of `type` without `listener`. */
  off<K extends keyof PushgateEvents>(type: K, listener?: (event: PushgateEvents[K]) => void): void;

  /**
   * @throws {TypeError} for an invalid channel name
   * @returns a function that unsubscribes this handler
   */
  subscribe<T = unknown>(channel: string, onMessage: (message: Message<T>) => void): () => void;

  /** Rejects with a `PushgateError` carrying the server's (or the client's) `code`. */
  publish(channel: string, data: unknown, options?: { event?: string }): Promise<Published>;

  /**
   * A direct message to users (at most 100), delivered on each one's personal
   * channel `#<id>` as `{from, data}`. Needs a token with `send: true`.
   * Queued while disconnected, like a publish.
   */
  send(to: string | string[], data: unknown, options?: { event?: string }): Promise<Sent>;

  /** Who is subscribed to `channel` (its namespace must have presence on). */
  presence(channel: string): Promise<Presence>;

  /** WebRTC rooms over this client's connection. */
  readonly rtc: Rtc;

  /** Starts connecting; only needed with `autoConnect: false` or after `close()`. */
  connect(): void;
  /** Closes every connection, stops reconnecting; queued publishes reject with `closed`. */
  close(): void;
}

export default Pushgate;

// --- WebRTC: pg.rtc -----------------------------------------------------------

export interface Rtc {
  /**
   * Joins `room` (a channel whose namespace has `signal = true`; every
   * `room:NAME` by default) and connects peer to peer to every other member:
   * one RTCPeerConnection each (a mesh, for small rooms), negotiated with
   * the perfect-negotiation pattern. Resolves once the server has made this
   * connection a member; the members already there are in `room.peers`.
   *
   * Rejects with a `PushgateError`: `unavailable` on `poll`/`longpoll` (a
   * room needs a held connection) or without RTCPeerConnection,
   * `bad_request` when `room` is not a room or is joined already,
   * `forbidden`/`unauthorized` when the server refuses it, `closed` when
   * the client closes first; with getUserMedia's error when `media` fails.
   * @throws {TypeError} (as a rejection) for an invalid channel name
   */
  join(room: string, options?: RoomOptions): Promise<RtcRoom>;
}

export interface RoomOptions {
  /**
   * What to send every peer: a MediaStream (yours: the room never stops
   * it), or MediaStreamConstraints for getUserMedia (`true`: audio and
   * video; the room stops those tracks when it is left). Default none.
   */
  media?: MediaStream | MediaStreamConstraints | boolean | null;
  /**
   * The data channel's label, or `false` for none. Default `"pushgate"`. The
   * channel is negotiated (`negotiated: true, id: 0`), so each end has it
   * at once: there is no `datachannel` event.
   */
  dataChannel?: string | boolean;
}

/** Why a peer was removed. */
export type PeerCloseReason =
  /** the member left the room (its `leave`) */
  | "left"
  /** our own connection changed (a reconnect, a reopened event stream): every peer is rebuilt */
  | "reconnect"
  /** `room.leave()`, `pg.close()`, or the room was refused */
  | "closed";

export interface RoomEvents {
  /** A peer was added: a member joined, or the mesh was rebuilt. Not fired for the members present when `join` resolved. */
  peer: RtcPeer;
  /** A peer's data channel opened. */
  open: RtcPeer;
  /** A message on a peer's data channel: a string, or an ArrayBuffer. */
  message: { peer: RtcPeer; data: string | ArrayBuffer };
  /** A peer's media stream arrived (or a new one replaced it). */
  stream: { peer: RtcPeer; stream: MediaStream };
  /** Each remote track, with the stream it belongs to. */
  track: { peer: RtcPeer; track: MediaStreamTrack; stream: MediaStream };
  /** A peer's `connectionState` changed; on `failed` the room restarts ICE. */
  state: { peer: RtcPeer; state: RTCPeerConnectionState };
  /** A peer was removed and closed; `peer.closeReason` says why. */
  leave: RtcPeer;
  /** Our connection changed (new `client` id): the peers were closed (`reconnect`) and are made again. */
  rejoin: { client: string };
  /** A refused signal, a failed negotiation step (`code` `webrtc`, with `peer`), the room refused after a reconnect. */
  error: PushgateError & { peer?: string };
}

/** A joined room. */
export class RtcRoom {
  private constructor();
  /** The room's channel. */
  readonly name: string;
  /** This connection's member id; null while not a member (between connections, after leaving). */
  readonly client: string | null;
  /** The other members' peers, by their client id. */
  readonly peers: ReadonlyMap<string, RtcPeer>;
  /** The ICE servers from the server (RTCConfiguration.iceServers): STUN/TURN are configured there, not here. */
  readonly iceServers: RTCIceServer[];
  /** What is sent to every peer. */
  readonly localStream: MediaStream | null;
  /** true once left (or the client closed). */
  readonly left: boolean;

  /** @returns a function that removes the listener */
  on<K extends keyof RoomEvents>(type: K, listener: (event: RoomEvents[K]) => void): () => void;
  off<K extends keyof RoomEvents>(type: K, listener?: (event: RoomEvents[K]) => void): void;
  /** Sends on every open data channel (peer to peer). @returns how many peers it went to */
  send(data: string | Blob | ArrayBuffer | ArrayBufferView): number;
  /** Sends this media to every peer from now on (`null`: none); each peer renegotiates. */
  setMedia(media: MediaStream | MediaStreamConstraints | boolean | null): Promise<MediaStream | null>;
  /** Unsubscribes, closes every peer, stops the tracks the room got from getUserMedia. */
  leave(): void;
}

/** Another member of a room, and the connection to it. */
export class RtcPeer {
  private constructor();
  /** Its client id. */
  readonly id: string;
  /** Its user id; null when anonymous. */
  readonly user: string | null;
  /** Whether this end yields when both make an offer at once (our id sorts before theirs). */
  readonly polite: boolean;
  readonly pc: RTCPeerConnection;
  /** The data channel, or null with `dataChannel: false`. */
  readonly channel: RTCDataChannel | null;
  /** What the peer sends us; null until its first track. */
  readonly stream: MediaStream | null;
  /** `pc.connectionState`. */
  readonly state: RTCPeerConnectionState;
  readonly closed: boolean;
  readonly closeReason: PeerCloseReason | null;
  /** Sends on the data channel. @returns false when it is not open */
  send(data: string | Blob | ArrayBuffer | ArrayBufferView): boolean;
}

// --- The pure pieces, exported for tests and for other clients ---------------

export function isValidChannel(name: unknown): boolean;
export function isValidEvent(name: unknown): boolean;

/**
 * Backoff with full jitter: `floor(random() * ceiling)`, where the ceiling is
 * `minDelay` for attempts `0 … fastRetries-1`, then doubles per attempt
 * (`fastRetries` → 2·minDelay, …) up to `maxDelay`. Defaults 1000, 30000, 4.
 */
export function backoffDelay(
  attempt: number,
  options?: { minDelay?: number; maxDelay?: number; fastRetries?: number },
  random?: () => number,
): number;

/** Standard base64, or base64url without padding when `urlSafe`. */
export function bytesToBase64(bytes: Uint8Array, urlSafe?: boolean): string;
/** Decodes standard or URL-safe base64, padded or not. @throws {TypeError} */
export function base64ToBytes(text: string): Uint8Array;

/** The server's cursor format; `""` for no entries. */
export function encodeCursor(entries: Iterable<[string, Position]>): string;
/** @throws {PushgateError} code `invalid_cursor` */
export function decodeCursor(cursor: string): Map<string, Position>;

/** A WebSocket binary frame (JSON header, `\n`, raw bytes) as a message with `data: Uint8Array`. */
export function decodeBinaryFrame(buffer: ArrayBuffer): Message<Uint8Array>;

/** A JWT's payload, read without verifying; null when unreadable. */
export function tokenPayload(token: string): { sub?: string; exp?: number; [claim: string]: unknown } | null;

/** ms from `at` until a token expiring at `exp` (s) should be refreshed: `margin` before, at most half of what is left, at least 1000. null without `exp`. */
export function refreshDelay(exp: number | undefined, at: number, margin?: number): number | null;

/** What a refusal means for the token: from an error's code, close code or end reason. */
export function authFailure(err: unknown): "expired" | "disconnected" | "unauthorized" | "forbidden" | null;

/** Per-channel positions, de-duplication and reset detection. */
export class PositionTracker {
  constructor();
  track(channel: string, position?: Position | null): void;
  untrack(channel: string): void;
  has(channel: string): boolean;
  get(channel: string): Position | null | undefined;
  channels(): string[];
  cursor(channels?: Iterable<string>): string;
  /** What the application should see for a server frame, in order: [], [message] or [reset, message]. */
  accept(frame: unknown): Array<Message | ResetEvent>;
  /** Fills unknown positions from a server cursor. */
  learn(cursor: string): void;
}

/** The bounded, ordered publish queue. */
export class OfflineQueue {
  constructor(options?: { max?: number; enabled?: boolean });
  max: number;
  enabled: boolean;
  readonly size: number;
  readonly inFlight: number;
  readonly pending: number;
  readonly connected: boolean;
  onchange: ((pending: number) => void) | null;
  push(command: object): Promise<any>;
  setConnected(connected: boolean): void;
  flush(send: (command: object) => Promise<any>, window?: number, key?: unknown): void;
  rejectWaiting(code: string, message: string): void;
}
