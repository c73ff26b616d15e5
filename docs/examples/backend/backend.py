"""pushgate's server API from Python, with the standard library only.

PUSHGATE_URL (default http://127.0.0.1:7070) and PUSHGATE_API_KEY (if the
server has one) come from the environment.
"""
import json
import os
import urllib.error
import urllib.parse
import urllib.request

BASE = os.environ.get("PUSHGATE_URL", "http://127.0.0.1:7070")
KEY = os.environ.get("PUSHGATE_API_KEY")


def api(method, path, body=None):
    """Calls the API; returns the JSON answer, or raises with pushgate's error."""
    headers = {"Content-Type": "application/json"}
    if KEY:
        headers["Authorization"] = "Bearer " + KEY
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(BASE + path, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as res:
            return json.load(res)
    except urllib.error.HTTPError as e:
        error = json.load(e)  # {"type":"error","code":…,"message":…}
        raise RuntimeError(f"{method} {path}: {e.code} {error['code']}: {error['message']}")


# Publish one message.
p = api("POST", "/api/publish", {"channel": "news", "data": {"title": "hello"}})
print(f"published on {p['channel']} at offset {p['offset']}")

# Publish several in one request: one result per publication, in order.
batch = api("POST", "/api/batch", {"publications": [
    {"channel": "news", "data": {"title": "second"}},
    {"channel": "news", "event": "update", "data": {"title": "third"}},
]})
print("batch offsets:", [r["offset"] for r in batch["results"]])

# Read the history back.
history = api("GET", "/api/history?" + urllib.parse.urlencode({"channel": "news", "limit": 10}))
print("history:", [m["data"]["title"] for m in history["messages"]])

# Who is in a channel with presence.
presence = api("GET", "/api/presence?channel=chat:lobby")
print("in chat:lobby:", [u["user"] for u in presence["users"]])

# End a user's connections (and refuse its current tokens).
gone = api("POST", "/api/disconnect", {"user": "alice"})
print(f"disconnected alice: {gone['disconnected']} connection(s)")
