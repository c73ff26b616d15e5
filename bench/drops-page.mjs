// Helpers of bench/drops: what runs in the page (the six clients and their
// records) and the arithmetic that turns the records into the reported metrics.

/**
 * Runs IN THE PAGE (passed to page.evaluate): one Pushgate client per
 * transport, each forced to that transport, all subscribed to `channel`,
 * recording into `window.bench[transport].r`:
 *   got    [seq, t, offset] per message handed to the application
 *   states {t, state, transport, attempt, delay, error} per `state` event
 *   resets {t, epoch, offset} per `reset` event
 *   errors {t, message} per `error` event
 * Times are `performance.timeOrigin + performance.now()` (ms since the epoch,
 * comparable with the publisher's Date.now() on the same machine).
 * @param {{channel: string, transports: string[], options: object}} arg
 */
export function setupClients({ channel, transports, options }) {
  const { Pushgate } = window.pushgateModule;
  const now = () => performance.timeOrigin + performance.now();
  window.bench = {};
  for (const name of transports) {
    const r = { got: [], states: [], resets: [], errors: [], seen: new Set() };
    const pg = new Pushgate("", { ...options, transports: [name] });
    pg.on("state", (e) => r.states.push({
      t: now(), state: e.state, transport: e.transport || null, attempt: e.attempt, delay: e.delay,
      error: e.error ? String(e.error.message || e.error) : undefined,
    }));
    pg.on("reset", (e) => r.resets.push({ t: now(), epoch: e.epoch, offset: e.offset }));
    pg.on("error", (e) => r.errors.push({ t: now(), message: String((e && e.message) || e) }));
    pg.subscribe(channel, (m) => {
      const seq = m.data && typeof m.data.seq === "number" ? m.data.seq : -1;
      r.got.push([seq, now(), m.offset]);
      r.seen.add(seq);
    });
    window.bench[name] = { pg, r };
  }
}

/** IN THE PAGE: every client connected and placed in the channel (its cursor knows it). */
export function allReady() {
  return Object.values(window.bench).every(({ pg }) => pg.state === "connected" && pg.cursor() !== "");
}

/** IN THE PAGE: transport → distinct messages received so far. */
export function progress() {
  const out = {};
  for (const [name, { r }] of Object.entries(window.bench)) out[name] = r.seen.size;
  return out;
}

/** IN THE PAGE: the records (without the Set) and each client's state now. */
export function collect() {
  const out = {};
  for (const [name, { pg, r }] of Object.entries(window.bench)) {
    out[name] = { got: r.got, states: r.states, resets: r.resets, errors: r.errors, finalState: pg.state };
  }
  return out;
}

/** IN THE PAGE: closes every client. */
export function closeAll() {
  for (const { pg } of Object.values(window.bench || {})) pg.close();
}

// ---------------------------------------------------------------------------
// Metrics (in Node)
// ---------------------------------------------------------------------------

export function median(xs) {
  if (!xs.length) return null;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/**
 * One client's metrics.
 * @param {object} rec what collect() returned for this client
 * @param {{sent: {t: number}[], count: number, lastSent: number, drops: {start: number, end: number}[],
 *          publishStart: number, within?: number, grace?: number}} run
 */
export function analyse(rec, { sent, count, lastSent, drops, publishStart, within = 5000, grace = 2000 }) {
  /** seq → first receipt time */
  const first = new Map();
  let duplicates = 0;
  let outOfOrder = 0;
  let maxOffset = -1;
  let foreign = 0;
  for (const [seq, t, offset] of rec.got) {
    if (!(seq >= 0 && seq < count)) { foreign++; continue; }
    if (first.has(seq)) { duplicates++; continue; }
    first.set(seq, t);
    // Order is the server's: its offsets (the publish order, which the
    // publisher keeps by sending each message after the previous reply).
    if (offset < maxOffset) outOfOrder++;
    else maxOffset = offset;
  }
  let byGrace = 0;
  let inTime = 0;
  const latencies = [];
  for (const [seq, t] of first) {
    const lat = t - sent[seq].t;
    latencies.push(lat);
    if (t <= lastSent + grace) byGrace++;
    if (lat <= within) inTime++;
  }
  const missing = [];
  for (let i = 0; i < count; i++) if (!first.has(i)) missing.push(i);
  // Recovery: from a drop's end to the first message (any, replayed or live)
  // handed to the application after it; null when none came before the end.
  const times = rec.got.map((g) => g[1]).sort((a, b) => a - b);
  const recoveries = drops.map(({ end }) => {
    const t = times.find((x) => x >= end);
    return t === undefined ? null : Math.round(t - end);
  });
  const recovered = recoveries.filter((x) => x !== null);
  // Disconnects: times the client left `connected` after having been connected.
  let disconnects = 0;
  let wasConnected = false;
  for (const s of rec.states) {
    if (s.state === "connected") wasConnected = true;
    else if (wasConnected) { disconnects++; wasConnected = false; }
  }
  const reconnecting = rec.states.filter((s) => s.state === "reconnecting" && s.t >= publishStart).length;
  // When it had everything: the latest first receipt, if nothing is missing.
  const complete = missing.length === 0 && first.size ? Math.max(...first.values()) : null;
  return {
    delivered: first.size,
    deliveredByGrace: byGrace,
    deliveredWithin: inTime,
    duplicates,
    outOfOrder,
    foreign,
    resets: rec.resets.length,
    disconnects,
    reconnecting,
    latencyMedian: latencies.length ? Math.round(median(latencies)) : null,
    latencyMax: latencies.length ? Math.round(Math.max(...latencies)) : null,
    recoveryMedian: recovered.length ? Math.round(median(recovered)) : null,
    recoveryMax: recovered.length ? Math.max(...recovered) : null,
    recoveryNever: recoveries.length - recovered.length,
    recoveries,
    completeAfterPublish: complete === null ? null : Math.round(complete - lastSent),
    missing: ranges(missing),
    finalState: rec.finalState,
    errors: rec.errors.length,
    lastStateError: [...rec.states].reverse().find((s) => s.error)?.error ?? null,
  };
}

/** [1,2,3,7] → "1-3,7" (seqs are 0-based publish numbers). */
export function ranges(xs) {
  const out = [];
  for (let i = 0; i < xs.length; ) {
    let j = i;
    while (j + 1 < xs.length && xs[j + 1] === xs[j] + 1) j++;
    out.push(i === j ? `${xs[i]}` : `${xs[i]}-${xs[j]}`);
    i = j + 1;
  }
  return out.join(",");
}
