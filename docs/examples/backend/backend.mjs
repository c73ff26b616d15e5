// pushgate's server API from Node (18 or later: the global fetch).
// PUSHGATE_URL (default http://127.0.0.1:7070) and PUSHGATE_API_KEY (if the
// server has one) come from the environment.
const BASE = process.env.PUSHGATE_URL ?? "http://127.0.0.1:7070";
const KEY = process.env.PUSHGATE_API_KEY;

// Calls the API; returns the JSON answer, or throws with pushgate's error.
async function api(method, path, body) {
  const headers = { "content-type": "application/json" };
  if (KEY) headers.authorization = `Bearer ${KEY}`;
  const res = await fetch(BASE + path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const answer = await res.json();
  if (!res.ok) {
    // {"type":"error","code":…,"message":…}
    throw new Error(`${method} ${path}: ${res.status} ${answer.code}: ${answer.message}`);
  }
  return answer;
}

// Publish one message.
const p = await api("POST", "/api/publish", { channel: "news", data: { title: "hello" } });
console.log(`published on ${p.channel} at offset ${p.offset}`);

// Publish several in one request: one result per publication, in order.
const batch = await api("POST", "/api/batch", {
  publications: [
    { channel: "news", data: { title: "second" } },
    { channel: "news", event: "update", data: { title: "third" } },
  ],
});
console.log("batch offsets:", JSON.stringify(batch.results.map((r) => r.offset)));

// Read the history back.
const query = new URLSearchParams({ channel: "news", limit: "10" });
const history = await api("GET", `/api/history?${query}`);
console.log("history:", JSON.stringify(history.messages.map((m) => m.data.title)));

// Who is in a channel with presence.
const presence = await api("GET", "/api/presence?channel=chat:lobby");
console.log("in chat:lobby:", JSON.stringify(presence.users.map((u) => u.user)));

// End a user's connections (and refuse its current tokens).
const gone = await api("POST", "/api/disconnect", { user: "alice" });
console.log(`disconnected alice: ${gone.disconnected} connection(s)`);
