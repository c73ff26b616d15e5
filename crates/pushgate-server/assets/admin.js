// The pushgate dashboard (/admin). Served from the binary with a strict
// Content-Security-Policy: no inline code, requests to this origin only.
// Everything shown comes from /metrics (public) and the server API, called
// with the login (the API key or an admin token) as `Authorization: Bearer`.
// Names from the server are only ever written as text, never as markup.
//
// Each chart's legend carries its latest and highest values in data-latest
// and data-peak, so tests read numbers rather than pixels.

"use strict";

(() => {
  const STORE = "pushgate.admin.credential";
  const TICK_MS = 1000; // /metrics and the charts
  const SLOW_TICKS = 5; // nodes, busiest channels, presence: every 5 ticks
  const USER_TICKS = 2; // a user's connections: every 2 ticks
  const POINTS = 120; // two minutes of samples per chart
  const LATENCY_WINDOW = 5; // quantiles over the last 5 samples' deliveries
  const TRANSPORTS = ["ws", "sse", "stream", "iframe", "longpoll", "poll"];
  const PALETTE = ["#0969da", "#1a7f37", "#bf3989", "#9a6700", "#8250df", "#cf222e"];

  const $ = (selector) => document.querySelector(selector);
  let credential = sessionStorage.getItem(STORE);
  let timer = null;
  let ticks = 0;
  let busy = false;

  // ---------------------------------------------------------------------
  // The API

  /** A refusal or failure of the server, with its message. */
  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  /** The message of an error answer, whichever shape it has. */
  async function errorMessage(res) {
    const text = await res.text().catch(() => "");
    try {
      const body = JSON.parse(text);
      return body.message || body.error?.message || text;
    } catch {
      return text || res.statusText;
    }
  }

  /** A JSON call of the server API; a 401 or 403 goes back to the login. */
  async function api(path, init = {}) {
    const headers = { ...(init.headers || {}), authorization: `Bearer ${credential}` };
    const res = await fetch(path, { ...init, headers, cache: "no-store" });
    if (!res.ok) {
      const error = new ApiError(res.status, await errorMessage(res));
      if (res.status === 401 || res.status === 403) {
        showLogin(`${res.status === 401 ? "Not logged in" : "Refused"}: ${error.message}`);
      }
      throw error;
    }
    return res.json();
  }

  /** What a panel shows when its call failed (a refusal has logged out). */
  function failure(what, e) {
    if (e.status === 404) return `this server has no ${what} (${e.message})`;
    return `${what}: ${e.message}`;
  }

  // ---------------------------------------------------------------------
  // /metrics: the Prometheus text format, parsed into samples

  function parseMetrics(text) {
    const samples = [];
    for (const line of text.split("\n")) {
      if (line === "" || line.startsWith("#")) continue;
      const m = /^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
      if (!m) continue;
      const labels = {};
      for (const l of (m[2] || "").matchAll(/([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
        labels[l[1]] = l[2].replace(/\\(.)/g, (_, c) => (c === "n" ? "\n" : c));
      }
      samples.push({ name: m[1], labels, value: Number(m[3]) });
    }
    return samples;
  }

  /** The sum of every sample of `name` over its labels; null when absent. */
  function total(samples, name, where = () => true) {
    let sum = null;
    for (const s of samples) {
      if (s.name === name && where(s.labels)) sum = (sum ?? 0) + s.value;
    }
    return sum;
  }

  /** Cumulative counts of a histogram by `le`, summed over its other labels. */
  function buckets(samples, name) {
    const byLe = new Map();
    for (const s of samples) {
      if (s.name !== `${name}_bucket`) continue;
      const le = s.labels.le === "+Inf" ? Infinity : Number(s.labels.le);
      byLe.set(le, (byLe.get(le) ?? 0) + s.value);
    }
    return [...byLe.entries()].sort((a, b) => a[0] - b[0]);
  }

  /**
   * Quantile `q` of the observations between two snapshots of a histogram's
   * buckets, interpolated within its bucket as Prometheus does; null when
   * nothing was observed.
   */
  function quantile(q, now, before) {
    const past = new Map(before);
    const counts = now.map(([le, n]) => [le, n - (past.get(le) ?? 0)]);
    const all = counts.length ? counts[counts.length - 1][1] : 0;
    if (all <= 0) return null;
    const rank = q * all;
    let lower = 0;
    let below = 0;
    for (const [le, n] of counts) {
      if (n >= rank) {
        if (le === Infinity) return lower;
        return lower + (le - lower) * ((rank - below) / Math.max(n - below, 1e-9));
      }
      lower = le;
      below = n;
    }
    return lower;
  }

  // ---------------------------------------------------------------------
  // Charts, drawn on a canvas

  class Chart {
    constructor(name, series, format) {
      this.figure = $(`.chart[data-chart="${name}"]`);
      this.canvas = this.figure.querySelector("canvas");
      this.format = format;
      this.series = series.map((s, i) => ({ ...s, color: PALETTE[i % PALETTE.length], values: [], peak: null }));
      const legend = this.figure.querySelector(".legend");
      for (const s of this.series) {
        s.item = document.createElement("li");
        s.item.dataset.series = s.key;
        s.item.style.setProperty("--color", s.color);
        s.item.append(`${s.label} `);
        s.value = document.createElement("span");
        s.value.className = "value";
        s.value.textContent = "–";
        s.item.append(s.value);
        legend.append(s.item);
      }
      this.samples = 0;
    }

    /** Adds one sample per series (`null`: no data for it). */
    push(values) {
      this.samples += 1;
      this.figure.dataset.samples = String(this.samples);
      let any = false;
      for (const s of this.series) {
        const v = values[s.key] ?? null;
        s.values.push(v);
        if (s.values.length > POINTS) s.values.shift();
        if (v !== null) {
          any = true;
          s.peak = Math.max(s.peak ?? v, v);
          s.item.dataset.latest = String(v);
          s.item.dataset.peak = String(s.peak);
        }
        s.value.textContent = v === null ? "no data" : this.format(v);
      }
      if (any) this.figure.dataset.live = "";
      this.draw();
    }

    draw() {
      const canvas = this.canvas;
      const ratio = window.devicePixelRatio || 1;
      const width = canvas.clientWidth;
      const height = canvas.clientHeight;
      if (width === 0 || height === 0) return;
      canvas.width = Math.round(width * ratio);
      canvas.height = Math.round(height * ratio);
      const ctx = canvas.getContext("2d");
      ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
      ctx.clearRect(0, 0, width, height);
      ctx.font = "11px system-ui, sans-serif";
      const visible = this.series.flatMap((s) => s.values.filter((v) => v !== null));
      if (visible.length === 0) {
        ctx.fillStyle = "#57606a";
        ctx.textAlign = "center";
        ctx.fillText("no data", width / 2, height / 2);
        return;
      }
      const top = niceCeiling(Math.max(...visible));
      const left = 44;
      const bottom = height - 6;
      const plot = { x: left, y: 6, w: width - left - 4, h: bottom - 6 };
      ctx.strokeStyle = "#eaeef2";
      ctx.fillStyle = "#57606a";
      ctx.textAlign = "right";
      ctx.textBaseline = "middle";
      for (let i = 0; i <= 4; i++) {
        const y = plot.y + plot.h - (plot.h * i) / 4;
        ctx.beginPath();
        ctx.moveTo(plot.x, y);
        ctx.lineTo(plot.x + plot.w, y);
        ctx.stroke();
        ctx.fillText(this.format((top * i) / 4), plot.x - 4, y);
      }
      const step = plot.w / (POINTS - 1);
      for (const s of this.series) {
        ctx.strokeStyle = s.color;
        ctx.lineWidth = 1.5;
        ctx.beginPath();
        let drawing = false;
        const offset = POINTS - s.values.length;
        s.values.forEach((v, i) => {
          if (v === null) {
            drawing = false;
            return;
          }
          const x = plot.x + (offset + i) * step;
          const y = plot.y + plot.h - (plot.h * v) / top;
          if (drawing) ctx.lineTo(x, y);
          else ctx.moveTo(x, y);
          drawing = true;
        });
        ctx.stroke();
      }
    }
  }

  /** The smallest 1, 2 or 5 × 10ⁿ at or above `v` (at least 1). */
  function niceCeiling(v) {
    if (!(v > 1)) return 1;
    const power = 10 ** Math.floor(Math.log10(v));
    for (const m of [1, 2, 5, 10]) if (m * power >= v) return m * power;
    return 10 * power;
  }

  /** Whole from 10 up, else at most two decimals (an axis tick may be 0.25). */
  const number = (v) => String(v >= 10 ? Math.round(v) : Math.round(v * 100) / 100);
  const millis = (v) => (v >= 10 ? String(Math.round(v)) : v.toFixed(v >= 1 ? 1 : 2));

  let charts = null;
  function makeCharts() {
    charts = {
      connections: new Chart("connections", TRANSPORTS.map((t) => ({ key: t, label: t })), number),
      rates: new Chart("rates", [
        { key: "published", label: "published/s" },
        { key: "delivered", label: "delivered/s" },
      ], number),
      latency: new Chart("latency", [
        { key: "p50", label: "p50" },
        { key: "p99", label: "p99" },
      ], millis),
      drops: new Chart("drops", [{ key: "dropped", label: "dropped/s" }], number),
    };
  }

  // The previous scrape (for rates) and the recent latency buckets.
  let previous = null;
  const latencyHistory = [];

  async function scrapeMetrics() {
    const res = await fetch("/metrics", { cache: "no-store" });
    if (!res.ok) throw new ApiError(res.status, await errorMessage(res));
    const samples = parseMetrics(await res.text());
    const at = performance.now();
    const connections = {};
    for (const t of TRANSPORTS) {
      connections[t] = total(samples, "pushgate_connections", (l) => l.transport === t);
    }
    charts.connections.push(connections);
    const now = {
      at,
      published: total(samples, "pushgate_messages_published_total"),
      delivered: total(samples, "pushgate_messages_delivered_total"),
      dropped: total(samples, "pushgate_subscribers_dropped_total"),
    };
    const rate = (key) => {
      if (!previous || now[key] === null || previous[key] === null) return null;
      const seconds = (now.at - previous.at) / 1000;
      // A counter that went down restarted: count from zero.
      const delta = now[key] >= previous[key] ? now[key] - previous[key] : now[key];
      return seconds > 0 ? delta / seconds : null;
    };
    charts.rates.push({ published: rate("published"), delivered: rate("delivered") });
    charts.drops.push({ dropped: rate("dropped") });
    previous = now;

    const latency = buckets(samples, "pushgate_delivery_latency_seconds");
    latencyHistory.push(latency);
    if (latencyHistory.length > LATENCY_WINDOW + 1) latencyHistory.shift();
    const oldest = latencyHistory[0];
    const ms = (q) => {
      if (latency.length === 0 || latencyHistory.length < 2) return null;
      const v = quantile(q, latency, oldest);
      return v === null ? null : v * 1000;
    };
    charts.latency.push({ p50: ms(0.5), p99: ms(0.99) });
  }

  // ---------------------------------------------------------------------
  // Panels from the API

  /** A table row of text cells (`num`: right-aligned). */
  function row(cells, { num = [] } = {}) {
    const tr = document.createElement("tr");
    cells.forEach((c, i) => {
      const td = document.createElement("td");
      if (c instanceof Node) td.append(c);
      else td.textContent = c ?? "";
      if (num.includes(i)) td.className = "num";
      tr.append(td);
    });
    return tr;
  }

  function duration(seconds) {
    const s = Math.floor(seconds);
    if (s < 120) return `${s} s`;
    if (s < 7200) return `${Math.floor(s / 60)} min`;
    if (s < 172800) return `${Math.floor(s / 3600)} h`;
    return `${Math.floor(s / 86400)} d`;
  }

  async function refreshNodes() {
    const body = $("#nodes tbody");
    try {
      const info = await api("/api/info");
      $("#whoami").textContent = `node ${info.node} · ${info.version}`;
      const rows = (info.nodes || []).map((n) => {
        const c = n.connections || {};
        const by = TRANSPORTS.filter((t) => c[t]).map((t) => `${t} ${c[t]}`).join(", ");
        const tr = row([
          n.node, n.version, duration(n.uptime_seconds ?? 0),
          by ? `${c.total ?? 0} (${by})` : String(c.total ?? 0),
          String(n.channels ?? ""), String(n.published ?? ""), String(n.delivered ?? ""),
        ]);
        tr.dataset.node = n.node;
        if (n.node === info.node) tr.className = "self";
        return tr;
      });
      body.replaceChildren(...rows);
      $("#nodes-note").textContent = rows.length > 1 ? `${rows.length} nodes` : "";
    } catch (e) {
      if (e.status === 401 || e.status === 403) return;
      $("#nodes-note").textContent = failure("/api/info", e);
    }
  }

  async function refreshChannels() {
    const table = $("#channels");
    try {
      const list = await api("/api/channels?order=busiest&limit=20");
      const rows = (list.channels || []).map((c) => {
        const link = document.createElement("button");
        link.type = "button";
        link.className = "link";
        link.textContent = c.channel;
        link.title = "Show its presence";
        link.addEventListener("click", () => {
          $("#presence-channel").value = c.channel;
          refreshPresence();
        });
        const tr = row([link, String(c.subscribers)], { num: [1] });
        tr.dataset.channel = c.channel;
        return tr;
      });
      table.querySelector("tbody").replaceChildren(...rows);
      table.dataset.count = String(rows.length);
      $("#channels-note").textContent = rows.length ? "" : "no channel has subscribers";
    } catch (e) {
      if (e.status === 401 || e.status === 403) return;
      $("#channels-note").textContent = failure("/api/channels", e);
    }
  }

  async function refreshPresence() {
    const channel = $("#presence-channel").value.trim();
    const out = $("#presence");
    if (!channel) return;
    try {
      const p = await api(`/api/presence?channel=${encodeURIComponent(channel)}`);
      const users = p.users || [];
      const summary = document.createElement("p");
      const anonymous = p.anonymous ? `, ${p.anonymous} anonymous` : "";
      summary.textContent = `${p.channel}: ${users.length} user${users.length === 1 ? "" : "s"}${anonymous}`;
      const list = document.createElement("ul");
      for (const u of users) {
        const li = document.createElement("li");
        const n = (u.clients || []).length;
        li.textContent = `${u.user} (${n} connection${n === 1 ? "" : "s"})`;
        li.dataset.user = u.user;
        list.append(li);
      }
      out.replaceChildren(summary, list);
      out.dataset.channel = p.channel;
    } catch (e) {
      if (e.status === 401 || e.status === 403) return;
      const p = document.createElement("p");
      p.className = "error";
      p.textContent = failure("presence", e);
      out.replaceChildren(p);
    }
  }

  // The user whose connections are shown, and the disconnect button's state.
  let shownUser = null;
  let confirming = null;

  async function refreshConnections() {
    if (!shownUser) return;
    const user = shownUser;
    const table = $("#connections");
    const button = $("#disconnect");
    try {
      const list = await api(`/api/connections?user=${encodeURIComponent(user)}`);
      if (user !== shownUser) return;
      const rows = (list.connections || []).map((c) => {
        const tr = row([c.transport, c.node, c.since, c.address]);
        tr.dataset.id = c.id ?? "";
        return tr;
      });
      table.querySelector("tbody").replaceChildren(...rows);
      table.hidden = rows.length === 0;
      table.dataset.user = user;
      table.dataset.count = String(rows.length);
      if (!confirming) button.disabled = rows.length === 0;
      // What a disconnect reported stays until the next look-up.
      const note = $("#connections-note");
      if (!note.dataset.keep) note.textContent = rows.length ? "" : `${user} has no connections`;
    } catch (e) {
      if (e.status === 401 || e.status === 403) return;
      $("#connections-note").textContent = failure("/api/connections", e);
    }
  }

  function resetDisconnect() {
    confirming = null;
    const button = $("#disconnect");
    button.textContent = "Disconnect them";
  }

  /** First click asks, the second (within 5 s) disconnects. */
  async function disconnect() {
    const user = shownUser;
    const button = $("#disconnect");
    if (!user) return;
    if (confirming?.user !== user) {
      confirming = { user, timer: setTimeout(resetDisconnect, 5000) };
      button.textContent = `Really disconnect ${user}?`;
      return;
    }
    clearTimeout(confirming.timer);
    resetDisconnect();
    button.disabled = true;
    const note = $("#connections-note");
    try {
      const r = await api("/api/disconnect", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ user }),
      });
      note.textContent = `disconnected ${r.disconnected} connection${r.disconnected === 1 ? "" : "s"} of ${user}; its tokens issued until now are refused`;
      note.dataset.keep = "1";
    } catch (e) {
      if (e.status === 401 || e.status === 403) return;
      note.textContent = failure("disconnect", e);
    }
    await refreshConnections();
  }

  // ---------------------------------------------------------------------
  // Login, and the loop

  function showLogin(message = "") {
    stop();
    credential = null;
    sessionStorage.removeItem(STORE);
    $("#dash").hidden = true;
    $("#logout").hidden = true;
    $("#whoami").textContent = "";
    $("#login").hidden = false;
    $("#login-error").textContent = message;
    $("#credential").value = "";
    $("#credential").focus();
  }

  function showDashboard() {
    $("#login").hidden = true;
    $("#login-error").textContent = "";
    $("#dash").hidden = false;
    $("#logout").hidden = false;
    if (!charts) makeCharts();
    start();
  }

  async function tick() {
    if (busy || !credential) return;
    busy = true;
    try {
      const work = [scrapeMetrics().then(
        () => { $("#status").textContent = `updated ${new Date().toLocaleTimeString()}`; },
        (e) => { $("#status").textContent = `/metrics: ${e.message}`; },
      )];
      if (ticks % SLOW_TICKS === 0) {
        work.push(refreshNodes(), refreshChannels());
        if ($("#presence").dataset.channel) work.push(refreshPresence());
      }
      if (ticks % USER_TICKS === 0) work.push(refreshConnections());
      ticks += 1;
      await Promise.all(work);
    } finally {
      busy = false;
    }
  }

  function start() {
    stop();
    ticks = 0;
    tick();
    timer = setInterval(tick, TICK_MS);
  }

  function stop() {
    if (timer !== null) clearInterval(timer);
    timer = null;
  }

  async function login(event) {
    event.preventDefault();
    const given = $("#credential").value.trim();
    if (!given) return;
    credential = given;
    try {
      // Any API call checks the login; /api/info also names the node.
      await api("/api/info");
    } catch (e) {
      if (e.status === 401 || e.status === 403) return; // showLogin said why
      if (e.status !== 404) {
        credential = null;
        $("#login-error").textContent = `Could not check the login: ${e.message}`;
        return;
      }
    }
    sessionStorage.setItem(STORE, credential);
    showDashboard();
  }

  function lookUp(event) {
    event.preventDefault();
    shownUser = $("#user-id").value.trim() || null;
    resetDisconnect();
    delete $("#connections-note").dataset.keep;
    $("#connections-note").textContent = "";
    refreshConnections();
  }

  function init() {
    $("#login-form").addEventListener("submit", login);
    $("#logout").addEventListener("click", () => showLogin());
    $("#presence-form").addEventListener("submit", (e) => { e.preventDefault(); refreshPresence(); });
    $("#user-form").addEventListener("submit", lookUp);
    $("#disconnect").addEventListener("click", disconnect);
    window.addEventListener("resize", () => {
      if (charts) for (const c of Object.values(charts)) c.draw();
    });
    if (credential) showDashboard();
    else showLogin();
  }

  init();
})();
