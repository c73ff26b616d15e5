// A stand-in for RTCPeerConnection, enough to test pg.rtc without a browser:
// the signaling state machine of the WebRTC spec (offer, answer, implicit
// rollback, negotiationneeded only when stable), trickled candidates, ICE
// restarts, negotiated data channels and tracks. Two instances "connect"
// once each has applied the other's description and both are stable on the
// same session. A description's `sdp` is JSON naming its connection and
// what it negotiates (features), not real SDP.

let seq = 0;
/** every connection, by id: a description names its sender, and the pair is found here */
const registry = new Map();

/** Runs `fn` in a later task, as the browser fires these events. */
const later = (fn) => setTimeout(fn, 0);

function invalidState(message) {
  const err = new Error(message);
  err.name = "InvalidStateError";
  return err;
}

export class FakeRTCPeerConnection {
  constructor(config = {}) {
    this.config = config;
    this.id = `pc${++seq}`;
    registry.set(this.id, this);
    this.signalingState = "stable";
    this.connectionState = "new";
    this.iceConnectionState = "new";
    this.iceGatheringState = "new";
    this.localDescription = null;
    this.remoteDescription = null;
    /** what this end wants negotiated: "data", "track:<pc>:<track>", "ice:<pc>:<gen>" */
    this._wants = new Set();
    /** what the last completed negotiation agreed */
    this._agreed = new Set();
    this._iceGen = 0;
    /** ICE generations whose candidates were gathered */
    this._gathered = new Set();
    /** @type {FakeDataChannel[]} */
    this._channels = [];
    this._senders = [];
    /** tracks already handed to ontrack */
    this._delivered = new Set();
    /** the spec's [[NegotiationNeeded]] flag */
    this._nnFlag = false;
    // for assertions
    this.offers = 0;
    this.rollbacks = 0;
    /** candidates added: objects, or null for the end of candidates */
    this.candidates = [];
    this.closed = false;
    this.onnegotiationneeded = null;
    this.onicecandidate = null;
    this.ontrack = null;
    this.onconnectionstatechange = null;
    this.oniceconnectionstatechange = null;
  }

  /** Set once a data channel section is negotiated. */
  get sctp() {
    return this._agreed.has("data") ? { state: "connected" } : null;
  }

  /** One transceiver per track added, sending once its track is negotiated. */
  getTransceivers() {
    return this._senders.map((sender) => ({
      sender,
      currentDirection: this._agreed.has(`track:${this.id}:${sender.track.id}`) ? "sendrecv" : null,
    }));
  }

  createDataChannel(label, options = {}) {
    if (this.closed) throw invalidState("closed");
    const ch = new FakeDataChannel(this, label, options);
    this._channels.push(ch);
    this._want("data");
    return ch;
  }

  addTrack(track, ...streams) {
    if (this.closed) throw invalidState("closed");
    const sender = { track, streams };
    this._senders.push(sender);
    this._want(`track:${this.id}:${track.id}`);
    return sender;
  }

  removeTrack(sender) {
    if (this.closed) throw invalidState("closed");
    this._senders = this._senders.filter((s) => s !== sender);
    this._wants.delete(`track:${this.id}:${sender.track.id}`);
    this._updateNegotiationNeeded();
  }

  restartIce() {
    this._iceGen++;
    this._want(`ice:${this.id}:${this._iceGen}`);
  }

  async setLocalDescription(description) {
    await Promise.resolve();
    if (this.closed) throw invalidState("closed");
    const type = description?.type || (this.signalingState === "have-remote-offer" ? "answer" : "offer");
    if (type === "offer") {
      if (this.signalingState !== "stable" && this.signalingState !== "have-local-offer") throw invalidState(`offer in ${this.signalingState}`);
      this.offers++;
      this.localDescription = this._description("offer", this._offerFeatures());
      this.signalingState = "have-local-offer";
    } else {
      if (this.signalingState !== "have-remote-offer") throw invalidState(`answer in ${this.signalingState}`);
      const offered = JSON.parse(this.remoteDescription.sdp).features;
      this.localDescription = this._description("answer", offered);
      this._settle(offered);
    }
    this._gather();
  }

  async setRemoteDescription(description) {
    await Promise.resolve();
    if (this.closed) throw invalidState("closed");
    const { type } = description;
    if (type === "offer") {
      // The implicit rollback of the spec: an incoming offer while ours is out.
      if (this.signalingState === "have-local-offer") {
        this.rollbacks++;
        this.localDescription = null;
        this.signalingState = "stable";
      }
      if (this.signalingState !== "stable") throw invalidState(`remote offer in ${this.signalingState}`);
      this.remoteDescription = description;
      this.signalingState = "have-remote-offer";
    } else if (type === "answer") {
      if (this.signalingState !== "have-local-offer") throw invalidState(`remote answer in ${this.signalingState}`);
      this.remoteDescription = description;
      this._settle(JSON.parse(this.localDescription.sdp).features);
    } else {
      throw new TypeError(`unknown description type ${type}`);
    }
  }

  async addIceCandidate(candidate) {
    await Promise.resolve();
    if (this.closed) throw invalidState("closed");
    if (!this.remoteDescription) throw invalidState("no remote description");
    this.candidates.push(candidate ?? null);
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    this.signalingState = "closed";
    this.connectionState = "closed";
    for (const ch of this._channels) ch.readyState = "closed";
  }

  /** Test knob: the network path broke (ICE failed). */
  fail() {
    this._setConnection("failed");
  }

  // -- the model --------------------------------------------------------------

  _description(type, features) {
    return { type, sdp: JSON.stringify({ pc: this.id, features: [...features] }), toJSON() { return { type: this.type, sdp: this.sdp }; } };
  }

  /** What an offer carries: what was agreed, less our tracks removed since, plus what we want. */
  _offerFeatures() {
    const out = new Set([...this._agreed].filter((f) => !(f.startsWith(`track:${this.id}:`) && !this._wants.has(f))));
    for (const f of this._wants) out.add(f);
    return out;
  }

  _needsNegotiation() {
    for (const f of this._wants) if (!this._agreed.has(f)) return true;
    for (const f of this._agreed) if (f.startsWith(`track:${this.id}:`) && !this._wants.has(f)) return true;
    return false;
  }

  _want(feature) {
    this._wants.add(feature);
    this._updateNegotiationNeeded();
  }

  /**
   * The spec's "update the negotiation-needed flag" after a change: only
   * when stable, and an event only when the flag goes up.
   */
  _updateNegotiationNeeded() {
    if (this.closed || this.signalingState !== "stable") return;
    if (!this._needsNegotiation()) {
      this._nnFlag = false;
      return;
    }
    if (this._nnFlag) return;
    this._nnFlag = true;
    this._fireNegotiationNeeded();
  }

  _fireNegotiationNeeded() {
    later(() => {
      if (!this.closed && this.signalingState === "stable" && this._nnFlag && this._needsNegotiation()) this.onnegotiationneeded?.({});
    });
  }

  /** A negotiation completed: back to stable, the event again if something is still to negotiate. */
  _settle(features) {
    this.signalingState = "stable";
    this._agreed = new Set(features);
    if (this._needsNegotiation()) {
      this._nnFlag = true;
      this._fireNegotiationNeeded();
    } else {
      this._nnFlag = false;
    }
    this._connectPair();
  }

  /** Candidates once per ICE generation: one host candidate, then the end (null). */
  _gather() {
    if (this._gathered.has(this._iceGen)) return;
    this._gathered.add(this._iceGen);
    this.iceGatheringState = "gathering";
    const candidate = { candidate: `candidate:1 1 udp 1 127.0.0.1 ${40000 + seq} typ host ufrag ${this.id}-${this._iceGen}`, sdpMid: "0", sdpMLineIndex: 0 };
    later(() => {
      if (this.closed) return;
      this.onicecandidate?.({ candidate: { ...candidate, toJSON: () => candidate } });
      this.iceGatheringState = "complete";
      this.onicecandidate?.({ candidate: null });
    });
  }

  /** The other end of this session, when both are stable on each other's descriptions. */
  _pair() {
    if (this.closed || this.signalingState !== "stable" || !this.remoteDescription) return null;
    const other = registry.get(JSON.parse(this.remoteDescription.sdp).pc);
    if (!other || other.closed || other.signalingState !== "stable" || !other.remoteDescription) return null;
    if (JSON.parse(other.remoteDescription.sdp).pc !== this.id) return null;
    const same = this._agreed.size === other._agreed.size && [...this._agreed].every((f) => other._agreed.has(f));
    return same ? other : null;
  }

  _connectPair() {
    const other = this._pair();
    if (!other) return;
    for (const [a, b] of [[this, other], [other, this]]) {
      a._setConnection("connected");
      if (a._agreed.has("data")) for (const ch of a._channels) ch._open(b);
      for (const sender of b._senders) {
        const f = `track:${b.id}:${sender.track.id}`;
        if (!a._agreed.has(f) || a._delivered.has(f)) continue;
        a._delivered.add(f);
        later(() => !a.closed && a.ontrack?.({ track: sender.track, streams: sender.streams }));
      }
    }
  }

  _setConnection(state) {
    if (this.closed || this.connectionState === state) return;
    this.connectionState = state;
    this.iceConnectionState = state;
    later(() => {
      if (this.closed) return;
      this.oniceconnectionstatechange?.({});
      this.onconnectionstatechange?.({});
    });
  }
}

class FakeDataChannel {
  constructor(pc, label, options) {
    this.pc = pc;
    this.label = label;
    this.id = options.id ?? null;
    this.negotiated = Boolean(options.negotiated);
    this.readyState = "connecting";
    this.binaryType = "blob";
    this.onopen = null;
    this.onmessage = null;
    this._remote = null;
  }

  /** Opens towards the channel with the same id on `otherPc`. */
  _open(otherPc) {
    const remote = otherPc._channels.find((c) => c.id === this.id);
    if (!remote || this.readyState !== "connecting") return;
    this._remote = remote;
    this.readyState = "open";
    later(() => this.onopen?.({}));
  }

  send(data) {
    if (this.readyState !== "open") throw invalidState(`channel ${this.readyState}`);
    const remote = this._remote;
    later(() => remote.readyState === "open" && remote.onmessage?.({ data }));
  }

  close() {
    this.readyState = "closed";
  }
}

/** A MediaStream-like stream of fake tracks. */
export function fakeStream(kinds = ["audio", "video"]) {
  const id = `stream${++seq}`;
  const tracks = kinds.map((kind) => ({ id: `${id}-${kind}`, kind, stopped: false, stop() { this.stopped = true; } }));
  return { id, getTracks: () => [...tracks] };
}
