//! Server configuration: defaults, the settings people write (TOML keys,
//! flags, environment variables), and durations written for people.

mod namespaces;
mod reference;
mod setting;
mod template;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use pushgate_core::auth::token::{AuthConfig, Verifier};
use pushgate_core::rate::Rate;
use pushgate_core::Policy;

use crate::error::Error;

pub use namespaces::NamespaceTables;
pub use reference::reference;
pub use setting::{parse_address, parse_bool, sections, Kind, Mark, Setting};
pub use template::{effective, template};

/// Everything `pushgate serve` can be told. Each field is a setting of
/// [`SETTINGS`], which names it in the file, on the command line and in the
/// environment; the CLI fills it from flags, `PUSHGATE_*` variables and an
/// optional TOML file (flags win).
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Bearer key for `/api/*`. Without one the API answers loopback peers only.
    pub api_key: Option<String>,
    /// Publications kept per channel.
    pub history_size: usize,
    /// How long a publication stays in history.
    pub history_ttl: Duration,
    /// Heartbeat interval of WebSockets: a Ping and a `{"type":"ping"}` text
    /// frame (browsers hide Pings from the page). Announced to clients in
    /// `subscribed` and `pong`.
    pub ws_ping_interval: Duration,
    /// A WebSocket that sends nothing (not even Pong) for this long is closed.
    pub ws_idle_timeout: Duration,
    /// Accept permessage-deflate (RFC 7692) when a client offers it. Always
    /// without context takeover: each message is compressed once and the
    /// frame shared by every subscriber (see `docs/protocol.md`).
    pub ws_deflate: bool,
    /// The largest window pushgate compresses with, 9..=15 (2^N bytes).
    pub ws_deflate_window_bits: u8,
    /// WebSocket messages shorter than this many bytes are sent uncompressed.
    pub ws_deflate_min_size: usize,
    /// Fan-out writes a message straight to waiting WebSocket, SSE and
    /// NDJSON sockets (one write each, no task wake-up) unless the channel
    /// is in a burst: this message and the one before each followed their
    /// predecessor by less than this. Messages of a burst go through the
    /// queues and leave several per write. `0`: always straight.
    pub direct_write_gap: Duration,
    /// Heartbeat interval of SSE and NDJSON streams, sent when nothing else
    /// was: SSE `ping` events, NDJSON `{"type":"ping"}` lines. Announced to
    /// clients in `subscribed`.
    pub stream_ping_interval: Duration,
    /// Heartbeat interval of hidden-iframe streams. Shorter than the other
    /// streams': a page cannot see a reset iframe connection (Chromium fires
    /// no event when a document's connection breaks), so the missing
    /// heartbeat is the only sign.
    pub iframe_ping_interval: Duration,
    /// How long a hidden-iframe document lasts before it ends with
    /// `{"type":"end","reason":"lifetime"}` and the client reloads it.
    pub iframe_lifetime: Duration,
    /// The `retry:` hint sent first on SSE streams.
    pub sse_retry: Duration,
    /// How long `/longpoll` holds a request when it gives no `timeout`.
    pub longpoll_timeout: Duration,
    /// The longest `timeout` a `/longpoll` request may ask for.
    pub longpoll_max_timeout: Duration,
    /// Origins allowed to call the HTTP transports and `/command` from a
    /// browser (CORS), e.g. `https://app.example.com`; `*` allows any.
    /// Empty: same-origin pages only.
    pub allowed_origins: Vec<String>,
    /// Largest WebSocket message, command or publish body, in bytes.
    pub max_message_size: usize,
    /// Events queued for one connection before it is cut off as too slow.
    pub outbox_capacity: usize,
    /// Subscriptions one connection may hold.
    pub max_subscriptions: usize,
    /// Connections held at once; 0: the process's open-file limit less a
    /// reserve (see `Config::connection_limit`).
    pub max_connections: usize,
    /// Connections one client IP address may hold at once; 0: no limit.
    pub max_connections_per_ip: usize,
    /// Largest request head (request line and headers), HTTP/1.1 and HTTP/2.
    pub max_head_size: usize,
    /// How long a request head may take to arrive, and how long an idle
    /// keep-alive connection is kept.
    pub head_timeout: Duration,
    /// Serve HTTP/2 (ALPN `h2` over TLS, prior knowledge on a plain port).
    pub http2: bool,
    /// Streams one HTTP/2 connection may have open at once.
    pub http2_max_streams: usize,
    /// PEM certificate chain: with `tls_key`, the port serves https and wss.
    pub tls_cert: Option<String>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<String>,
    /// How long a TLS handshake may take.
    pub tls_handshake_timeout: Duration,
    /// A second, plain-HTTP address that only redirects to https.
    pub tls_redirect: Option<SocketAddr>,
    /// Publishes and direct messages (`publish`, `send`) one client may
    /// make per second on average: per WebSocket connection, and per
    /// address (an IPv6 client's /64) on `POST /command`, where each
    /// request may come on a new connection. 0: no limit. The server API
    /// is never limited.
    pub client_publish_rate: u32,
    /// How many of them a client may make at once, before the rate applies.
    pub client_publish_burst: u32,
    /// How deep a command's or an API body's fields (published `data`)
    /// may nest arrays and objects; deeper is refused with `too_deep`.
    pub max_json_depth: usize,
    /// HMAC secret that signs client tokens (HS256/384/512). With no secret,
    /// public key or JWKS, pushgate checks no tokens and every channel is
    /// open to anyone.
    pub auth_secret: Option<String>,
    /// A PEM file with the public key that checks client tokens: RSA
    /// (RS256/384/512) or EC P-256 (ES256).
    pub auth_public_key: Option<String>,
    /// A JSON Web Key Set file; a token names its key by `kid`.
    pub auth_jwks: Option<String>,
    /// The `aud` every client token must carry.
    pub auth_audience: Option<String>,
    /// The `iss` every client token must carry.
    pub auth_issuer: Option<String>,
    /// Accept client tokens without `exp` (they never expire).
    pub auth_allow_no_exp: bool,
    /// Clock difference tolerated on `exp` and `nbf`.
    pub auth_leeway: Duration,
    /// Serve the dashboard at `/admin`, and take tokens with `"admin": true`
    /// wherever the API key is taken. Needs an API key or a token key.
    pub admin_enabled: bool,
    /// The `[channels]`, `[personal]` and `[namespaces.NAME]` tables as the
    /// file wrote them, resolved by [`Config::channel_rules`] once it is
    /// known whether a key is configured (the defaults depend on it).
    pub namespace_tables: NamespaceTables,
    /// Channel rules set in code (tests, embedders): used as they are,
    /// instead of the tables.
    pub namespaces: Option<pushgate_core::Namespaces>,
    /// Keep history, offsets and epochs in this directory, across restarts
    /// and crashes; none: in memory only.
    pub data_dir: Option<String>,
    /// When publications reach the disk (with `data_dir`).
    pub sync: crate::store::Sync,
    /// How often `sync = "interval"` syncs.
    pub sync_interval: Duration,
    /// The Redis that nodes share channels through (`redis://…`); none:
    /// this node alone.
    pub broker_url: Option<String>,
    /// Begins every Redis key and pub/sub channel of this cluster.
    pub broker_prefix: String,
    /// How long one Redis call may take.
    pub broker_timeout: Duration,
    /// How long a member stays listed in presence after its node stopped
    /// renewing it (a crashed node's).
    pub broker_presence_ttl: Duration,
    /// A PEM file of the certificates to trust for `rediss://`, instead of
    /// the system's roots.
    pub broker_tls_ca: Option<String>,
    /// STUN and TURN URLs handed to clients that join a room, for their
    /// `RTCPeerConnection`s.
    pub ice_servers: Vec<String>,
    /// coturn's `use-auth-secret`: each joining client gets TURN
    /// credentials made with this secret, valid `turn_credential_ttl`.
    pub turn_secret: Option<String>,
    /// How long TURN credentials made from `turn_secret` are valid.
    pub turn_credential_ttl: Duration,
    /// A fixed TURN username for every client (without `turn_secret`).
    pub turn_username: Option<String>,
    /// The password of `turn_username`.
    pub turn_credential: Option<String>,
    /// Largest `data` of one WebRTC signal, in bytes of JSON.
    pub max_signal_size: usize,
    /// Serve `/demo/token?user=NAME`, which hands anyone a token signed
    /// with `auth_secret`: for trying users on the demo; never in production.
    pub demo_tokens: bool,
    /// Log as JSON lines rather than human-readable text.
    pub log_json: bool,
    /// On SIGTERM or Ctrl-C: how long to wait for connections to end after
    /// telling them to (WebSocket 1012, streams ended, long-polls answered).
    pub shutdown_timeout: Duration,
    /// Worker threads that serve connections. 0: one per CPU this process
    /// may run on.
    pub worker_threads: usize,
    /// Serve the demo page at `/` and publish the time on channel `clock`.
    pub demo: bool,
    /// Expose `/echo`, a WebSocket that sends every frame back through the
    /// same code path as `/ws` — for conformance tests (Autobahn); never in production.
    pub echo: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            api_key: None,
            history_size: 1000,
            history_ttl: Duration::from_secs(600),
            ws_ping_interval: Duration::from_secs(15),
            ws_idle_timeout: Duration::from_secs(60),
            ws_deflate: false,
            ws_deflate_window_bits: 15,
            ws_deflate_min_size: 128,
            direct_write_gap: Duration::from_millis(10),
            stream_ping_interval: Duration::from_secs(15),
            iframe_ping_interval: Duration::from_secs(2),
            iframe_lifetime: Duration::from_secs(300),
            sse_retry: Duration::from_secs(2),
            longpoll_timeout: Duration::from_secs(25),
            longpoll_max_timeout: Duration::from_secs(120),
            allowed_origins: Vec::new(),
            max_message_size: 64 * 1024,
            outbox_capacity: 1024,
            max_subscriptions: 128,
            max_connections: 0,
            max_connections_per_ip: 0,
            max_head_size: 64 * 1024,
            head_timeout: Duration::from_secs(10),
            http2: true,
            http2_max_streams: 128,
            tls_cert: None,
            tls_key: None,
            tls_handshake_timeout: Duration::from_secs(10),
            tls_redirect: None,
            client_publish_rate: 100,
            client_publish_burst: 200,
            max_json_depth: pushgate_core::protocol::MAX_JSON_DEPTH,
            auth_secret: None,
            auth_public_key: None,
            auth_jwks: None,
            auth_audience: None,
            auth_issuer: None,
            auth_allow_no_exp: false,
            auth_leeway: Duration::ZERO,
            admin_enabled: false,
            namespaces: None,
            namespace_tables: NamespaceTables::default(),
            data_dir: None,
            sync: crate::store::Sync::Always,
            sync_interval: Duration::from_millis(100),
            broker_url: None,
            broker_prefix: "pushgate".to_owned(),
            broker_timeout: Duration::from_secs(5),
            broker_presence_ttl: Duration::from_secs(30),
            broker_tls_ca: None,
            ice_servers: Vec::new(),
            turn_secret: None,
            turn_credential_ttl: pushgate_core::rtc::TURN_CREDENTIAL_TTL,
            turn_username: None,
            turn_credential: None,
            max_signal_size: pushgate_core::rtc::MAX_SIGNAL_SIZE,
            demo_tokens: false,
            log_json: false,
            shutdown_timeout: Duration::from_secs(10),
            worker_threads: 0,
            demo: true,
            echo: false,
        }
    }
}

setting::settings! {
    [http]
    /// Address to listen on: IP:PORT (0.0.0.0:7070, [::1]:7070),
    /// localhost:PORT (127.0.0.1), :PORT (every interface, 0.0.0.0, as in Go
    /// and Caddy) or a bare PORT (127.0.0.1)
    listen: listen, "listen", "PUSHGATE_LISTEN";
    /// Bearer key for /api/*; without one the API answers loopback clients only
    api_key: api_key, "api-key", "PUSHGATE_API_KEY", Secret;
    /// Origins allowed to use the HTTP transports and /command from a browser
    /// (CORS), e.g. https://app.example.com; `*` allows any; none: same-origin
    /// pages only
    allowed_origins: allowed_origins, "allowed-origin", "PUSHGATE_ALLOWED_ORIGINS";

    /// Serve HTTP/2: over TLS when the client offers it (ALPN `h2`), and with
    /// prior knowledge (h2c) on a plain port
    http2: http2, "no-http2", "PUSHGATE_NO_HTTP2", Inverted;
    /// Streams one HTTP/2 connection may have open at once
    http2_max_streams: http2_max_streams, "http2-max-streams", "PUSHGATE_HTTP2_MAX_STREAMS";

    [tls]
    /// PEM certificate chain; with `tls.key` the port serves https and wss
    /// only (SIGHUP reloads both files)
    cert: tls_cert, "tls-cert", "PUSHGATE_TLS_CERT";
    /// PEM private key of the certificate (PKCS#8, PKCS#1 or SEC1)
    key: tls_key, "tls-key", "PUSHGATE_TLS_KEY";
    /// How long a TLS handshake may take
    handshake_timeout: tls_handshake_timeout, "tls-handshake-timeout",
        "PUSHGATE_TLS_HANDSHAKE_TIMEOUT";
    /// Also listen on this plain-HTTP address (written as `listen`), only
    /// to redirect to https
    redirect: tls_redirect, "tls-redirect", "PUSHGATE_TLS_REDIRECT";

    [store]
    /// Keep history, offsets and epochs on disk in this directory: a restart
    /// or a crash costs clients nothing (they resume without `reset`); none:
    /// in memory only. One server per directory
    data_dir: data_dir, "data-dir", "PUSHGATE_DATA_DIR";
    /// When a publication reaches the disk: `always` (before it is
    /// acknowledged, concurrent ones sharing a sync), `interval` (every
    /// sync_interval: a crash of the machine may lose what was acknowledged
    /// since), `never` (the kernel's write-back, about 30 s). After a crash
    /// in interval or never mode every channel goes on in a new epoch:
    /// clients reset rather than skip what may be lost
    sync: sync, "sync", "PUSHGATE_SYNC";
    /// How often sync = "interval" syncs
    sync_interval: sync_interval, "sync-interval", "PUSHGATE_SYNC_INTERVAL";

    [broker]
    /// Share channels with other pushgate nodes through this Redis, so that
    /// clients resume on any node: redis://[user:password@]host[:port][/db],
    /// rediss://… for TLS, redis+sentinel://[user:password@]host:port[,host:port…]/service[/db]
    /// to follow the master Sentinel names, or redis+cluster://host:port[,host:port…]
    /// for a Redis Cluster (rediss+cluster:// over TLS). History, offsets and
    /// epochs then live in Redis
    /// (not with data_dir); none: this node alone
    url: broker_url, "broker", "PUSHGATE_BROKER", Secret;
    /// Begins every Redis key and pub/sub channel: nodes with the same prefix
    /// share channels; another prefix on the same Redis is another cluster
    prefix: broker_prefix, "broker-prefix", "PUSHGATE_BROKER_PREFIX";
    /// How long a Redis call may take before it fails (a publish then
    /// answers 503)
    timeout: broker_timeout, "broker-timeout", "PUSHGATE_BROKER_TIMEOUT";
    /// How long a node's presence entries outlive it: each node renews its
    /// members every third of this, so a crashed node's connections leave
    /// presence at most this long after it died
    presence_ttl: broker_presence_ttl, "broker-presence-ttl",
        "PUSHGATE_BROKER_PRESENCE_TTL";
    /// A PEM file of the CA certificates that sign the Redis server's
    /// certificate (rediss://), trusted instead of the system's roots
    tls_ca: broker_tls_ca, "broker-tls-ca", "PUSHGATE_BROKER_TLS_CA";

    [history]
    /// Messages kept per channel
    size: history_size, "history-size", "PUSHGATE_HISTORY_SIZE";
    /// How long a message stays in history
    ttl: history_ttl, "history-ttl", "PUSHGATE_HISTORY_TTL";

    [websocket]
    /// WebSocket heartbeat interval: a Ping and a `{"type":"ping"}` text frame
    /// that pages can see
    ping_interval: ws_ping_interval, "ws-ping-interval", "PUSHGATE_WS_PING_INTERVAL";
    /// Close WebSockets that send nothing, not even a Pong, for this long
    idle_timeout: ws_idle_timeout, "ws-idle-timeout", "PUSHGATE_WS_IDLE_TIMEOUT";
    /// Accept permessage-deflate (RFC 7692, no context takeover) when clients
    /// offer it; each message is compressed once for all subscribers
    deflate: ws_deflate, "ws-deflate", "PUSHGATE_WS_DEFLATE";
    /// Largest compression window, 9 to 15 (2^N bytes)
    deflate_window_bits: ws_deflate_window_bits, "ws-deflate-window-bits",
        "PUSHGATE_WS_DEFLATE_WINDOW_BITS";
    /// Messages shorter than this many bytes are sent uncompressed
    deflate_min_size: ws_deflate_min_size, "ws-deflate-min-size", "PUSHGATE_WS_DEFLATE_MIN_SIZE";

    [streams]
    /// Heartbeat interval of SSE and NDJSON streams (sent when nothing else
    /// was; clients watch for it)
    ping_interval: stream_ping_interval, "stream-ping-interval", "PUSHGATE_STREAM_PING_INTERVAL";
    /// Heartbeat interval of hidden-iframe streams, shorter: a page cannot see
    /// a reset iframe connection, only its silence
    iframe_ping_interval: iframe_ping_interval, "iframe-ping-interval",
        "PUSHGATE_IFRAME_PING_INTERVAL";
    /// How long a hidden-iframe document lasts before the client reloads it
    iframe_lifetime: iframe_lifetime, "iframe-lifetime", "PUSHGATE_IFRAME_LIFETIME";
    /// SSE reconnect hint, sent first as `retry:`
    sse_retry: sse_retry, "sse-retry", "PUSHGATE_SSE_RETRY";

    [longpoll]
    /// How long /longpoll holds a request that gives no `timeout`
    timeout: longpoll_timeout, "longpoll-timeout", "PUSHGATE_LONGPOLL_TIMEOUT";
    /// The longest `timeout` a /longpoll request may ask for
    max_timeout: longpoll_max_timeout, "longpoll-max-timeout", "PUSHGATE_LONGPOLL_MAX_TIMEOUT";

    [limits]
    /// Largest WebSocket message, command or publish body, in bytes
    max_message_size: max_message_size, "max-message-size", "PUSHGATE_MAX_MESSAGE_SIZE";
    /// Events queued for one connection before it is cut off as too slow
    outbox_capacity: outbox_capacity, "outbox-capacity", "PUSHGATE_OUTBOX_CAPACITY";
    /// Subscriptions one connection may hold
    max_subscriptions: max_subscriptions, "max-subscriptions", "PUSHGATE_MAX_SUBSCRIPTIONS";
    /// Connections held at once, every protocol (over it: 503); 0: the
    /// process's open-file limit less 256
    max_connections: max_connections, "max-connections", "PUSHGATE_MAX_CONNECTIONS";
    /// Connections one client IP address may hold at once (over it: 429); 0: no limit
    max_connections_per_ip: max_connections_per_ip, "max-connections-per-ip",
        "PUSHGATE_MAX_CONNECTIONS_PER_IP";
    /// Largest request head, request line and headers, in bytes (over it: 431)
    max_head_size: max_head_size, "max-head-size", "PUSHGATE_MAX_HEAD_SIZE";
    /// How long a request head may take to arrive (slow clients are cut off),
    /// and how long an idle keep-alive connection is kept
    head_timeout: head_timeout, "head-timeout", "PUSHGATE_HEAD_TIMEOUT";
    /// Publishes and direct messages a client may make per second on
    /// average, per WebSocket and per address on /command (IPv6: per /64);
    /// 0: no limit. Far above a chat or a game (20 to 60 updates a second),
    /// far below a flood. Never applies to the /api/* of the application
    client_publish_rate: client_publish_rate, "client-publish-rate",
        "PUSHGATE_CLIENT_PUBLISH_RATE";
    /// Publishes and direct messages a client may make at once before
    /// client_publish_rate applies: room for a queue flushed on reconnect
    client_publish_burst: client_publish_burst, "client-publish-burst",
        "PUSHGATE_CLIENT_PUBLISH_BURST";
    /// How deep published data and client commands may nest arrays and
    /// objects: client parsers fail on deep nesting (.NET's at 64), and
    /// delivery wraps data in up to four more levels
    max_json_depth: max_json_depth, "max-json-depth", "PUSHGATE_MAX_JSON_DEPTH";

    [auth]
    /// HMAC secret of client tokens (HS256); none of secret, public key and
    /// JWKS: no tokens are checked and channels are open to anyone
    secret: auth_secret, "auth-secret", "PUSHGATE_AUTH_SECRET", Secret;
    /// PEM file of the public key of client tokens: RSA (RS256) or EC P-256
    /// (ES256)
    public_key: auth_public_key, "auth-public-key", "PUSHGATE_AUTH_PUBLIC_KEY";
    /// JSON Web Key Set file of client tokens; a token names its key by `kid`
    jwks: auth_jwks, "auth-jwks", "PUSHGATE_AUTH_JWKS";
    /// The `aud` every client token must carry
    audience: auth_audience, "auth-audience", "PUSHGATE_AUTH_AUDIENCE";
    /// The `iss` every client token must carry
    issuer: auth_issuer, "auth-issuer", "PUSHGATE_AUTH_ISSUER";
    /// Accept client tokens without `exp` (they never expire)
    allow_no_exp: auth_allow_no_exp, "auth-allow-no-exp", "PUSHGATE_AUTH_ALLOW_NO_EXP";
    /// Clock difference tolerated on a token's `exp` and `nbf`
    leeway: auth_leeway, "auth-leeway", "PUSHGATE_AUTH_LEEWAY";

    [admin]
    /// Serve the dashboard at /admin (off: /admin is 404), and accept tokens
    /// with `"admin": true` wherever the API key is. Its login is the API key
    /// or such a token, so it needs api_key or a token key (auth.secret,
    /// auth.public_key, auth.jwks); serve it over TLS only
    enabled: admin_enabled, "admin", "PUSHGATE_ADMIN";

    [webrtc]
    /// STUN or TURN server URL handed to clients joining a room
    /// (`stun:host:3478`, `turn:host:3478?transport=udp`, `turns:host:5349`);
    /// repeat for several. None: clients use host candidates only (same
    /// machine or network)
    ice_servers: ice_servers, "ice-server", "PUSHGATE_ICE_SERVERS";
    /// coturn's `static-auth-secret` (`use-auth-secret`): each joining client
    /// gets its own short-lived TURN credentials for the turn: URLs
    turn_secret: turn_secret, "turn-secret", "PUSHGATE_TURN_SECRET", Secret;
    /// How long TURN credentials made from turn_secret are valid; they must
    /// outlast a call
    turn_credential_ttl: turn_credential_ttl, "turn-credential-ttl",
        "PUSHGATE_TURN_CREDENTIAL_TTL";
    /// A fixed TURN username for every client (instead of turn_secret)
    turn_username: turn_username, "turn-username", "PUSHGATE_TURN_USERNAME";
    /// The password of turn_username
    turn_credential: turn_credential, "turn-credential", "PUSHGATE_TURN_CREDENTIAL", Secret;
    /// Largest data of one signal (an SDP offer, an ICE candidate), in bytes
    /// of JSON
    max_signal_size: max_signal_size, "max-signal-size", "PUSHGATE_MAX_SIGNAL_SIZE";

    [fanout]
    /// Two messages in a row this close to the previous one of their channel
    /// make a burst, which goes through the queues instead of straight to
    /// sockets; 0: always straight
    direct_write_gap: direct_write_gap, "direct-write-gap", "PUSHGATE_DIRECT_WRITE_GAP";

    [server]
    /// Worker threads serving connections; 0: one per CPU this process may use
    worker_threads: worker_threads, "worker-threads", "PUSHGATE_WORKER_THREADS";
    /// On SIGTERM or Ctrl-C, how long to wait for connections to end
    shutdown_timeout: shutdown_timeout, "shutdown-timeout", "PUSHGATE_SHUTDOWN_TIMEOUT";
    /// Log JSON lines instead of text
    log_json: log_json, "log-json", "PUSHGATE_LOG_JSON";
    /// Serve the demo page at / and publish the time on channel `clock`
    demo: demo, "no-demo", "PUSHGATE_NO_DEMO", Inverted;
    /// Serve /demo/token?user=NAME, handing anyone a token signed with the
    /// auth secret, to try users on the demo; never in production
    demo_tokens: demo_tokens, "demo-tokens", "PUSHGATE_DEMO_TOKENS";
    /// Expose /echo, a WebSocket echo through the /ws code path, for
    /// conformance tests (Autobahn); never in production
    echo: echo, "echo", "PUSHGATE_ECHO";
}

impl Config {
    /// What WebSocket handshakes may agree to.
    pub fn deflate(&self) -> pushgate_core::websocket::DeflateConfig {
        pushgate_core::websocket::DeflateConfig {
            enabled: self.ws_deflate,
            server_max_window_bits: self.ws_deflate_window_bits,
            min_size: self.ws_deflate_min_size,
        }
    }

    /// The retention of the memory log: `history` settings, and the
    /// namespaces' own.
    pub fn memory_log(&self) -> pushgate_core::MemoryLogConfig {
        pushgate_core::MemoryLogConfig {
            history_size: self.history_size,
            history_ttl_ms: self.history_ttl.as_millis() as u64,
            namespaces: std::sync::Arc::new(self.channel_rules()),
            ..Default::default()
        }
    }

    /// Reads a TOML file over the defaults; unknown keys are errors so typos
    /// do not pass silently.
    pub fn from_toml(text: &str) -> Result<Self, Error> {
        Self::from_toml_with_sources(text).map(|(config, _)| config)
    }

    /// [`Config::from_toml`], and the settings the file set.
    pub fn from_toml_with_sources(text: &str) -> Result<(Self, Vec<&'static Setting>), Error> {
        let fail = |e: String| Error::config(format!("config file: {e}"));
        let mut file: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| fail(e.to_string()))?;
        let mut config = Config {
            namespace_tables: NamespaceTables::take(&mut file).map_err(fail)?,
            ..Config::default()
        };
        let set = setting::apply_toml(&mut config, file).map_err(fail)?;
        Ok((config, set))
    }

    /// [`Config::worker_threads`], with 0 resolved to the CPUs available.
    pub fn worker_count(&self) -> usize {
        match self.worker_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }

    /// Rejects combinations that cannot work.
    pub fn validate(&self) -> Result<(), Error> {
        let checks = [
            (self.ws_ping_interval.is_zero(), "ws_ping_interval must be above zero"),
            (self.stream_ping_interval.is_zero(), "stream_ping_interval must be above zero"),
            (self.iframe_ping_interval.is_zero(), "iframe_ping_interval must be above zero"),
            (self.iframe_lifetime.is_zero(), "iframe_lifetime must be above zero"),
            (
                self.ws_idle_timeout <= self.ws_ping_interval,
                "ws_idle_timeout must be longer than ws_ping_interval, or healthy clients are cut off",
            ),
            (
                self.longpoll_timeout > self.longpoll_max_timeout,
                "longpoll_timeout must not exceed longpoll_max_timeout",
            ),
            (self.max_message_size < 128, "max_message_size must be at least 128 bytes"),
            (
                !(9..=15).contains(&self.ws_deflate_window_bits),
                "ws_deflate_window_bits must be between 9 and 15",
            ),
            (self.outbox_capacity == 0, "outbox_capacity must be at least 1"),
            (self.max_subscriptions == 0, "max_subscriptions must be at least 1"),
            (
                self.client_publish_rate > 0 && self.client_publish_burst == 0,
                "client_publish_burst must be at least 1 (or client_publish_rate 0: no limit)",
            ),
            (self.worker_threads > 1024, "worker_threads must be at most 1024"),
            (
                self.tls_cert.is_some() != self.tls_key.is_some(),
                "tls_cert and tls_key go together: give both, or neither",
            ),
            (
                self.tls_redirect.is_some() && self.tls_cert.is_none(),
                "tls_redirect needs tls_cert and tls_key: it redirects to https",
            ),
            (self.max_head_size < 1024, "max_head_size must be at least 1024 bytes"),
            (self.head_timeout.is_zero(), "head_timeout must be above zero"),
            (
                self.tls_handshake_timeout.is_zero(),
                "tls_handshake_timeout must be above zero",
            ),
            (self.http2_max_streams == 0, "http2_max_streams must be at least 1"),
            (
                self.admin_enabled
                    && self.api_key.is_none()
                    && self.auth_secret.is_none()
                    && self.auth_public_key.is_none()
                    && self.auth_jwks.is_none(),
                "admin needs a login to guard it: give api_key (--api-key), or a token key \
                 (auth.secret, auth.public_key or auth.jwks) to sign admin tokens \
                 (pushgate token --admin) with",
            ),
            (
                self.demo_tokens && self.auth_secret.is_none(),
                "demo_tokens needs auth_secret: demo tokens are signed with it",
            ),
            (
                self.turn_username.is_some() != self.turn_credential.is_some(),
                "turn_username and turn_credential go together: give both, or neither",
            ),
            (
                self.turn_secret.is_some() && self.turn_username.is_some(),
                "turn_secret and turn_username exclude each other: credentials are \
                 either made from the secret for each client or fixed",
            ),
            (
                self.turn_secret.is_some() && self.turn_credential_ttl.as_secs() == 0,
                "turn_credential_ttl must be at least 1s",
            ),
            (self.max_signal_size < 1024, "max_signal_size must be at least 1024 bytes"),
            (self.sync_interval.is_zero(), "sync_interval must be above zero"),
            (
                self.broker_url.is_some() && self.data_dir.is_some(),
                "broker and data_dir exclude each other: with a broker, history lives \
                 in Redis (make Redis durable with its appendonly setting)",
            ),
            (
                self.broker_prefix.is_empty()
                    || self.broker_prefix.len() > 64
                    || self.broker_prefix.contains(['{', '}', ':']),
                "broker_prefix must be 1 to 64 characters, without { } or :",
            ),
            (self.broker_timeout.is_zero(), "broker_timeout must be above zero"),
            (
                self.broker_presence_ttl < Duration::from_millis(300),
                "broker_presence_ttl must be at least 300ms",
            ),
        ];
        if let Some(url) = self.ice_servers.iter().find(|u| !is_ice_url(u)) {
            return Err(Error::config(format!(
                "ice_servers: {url:?} is not a STUN or TURN URL: write stun:HOST[:PORT], \
                 turn:HOST[:PORT][?transport=udp|tcp] or turns:HOST[:PORT]"
            )));
        }
        match checks.iter().find(|(bad, _)| *bad) {
            Some((_, why)) => Err(Error::config(*why)),
            None => Ok(()),
        }
    }
}

/// A URL an `RTCPeerConnection` takes as an ICE server (RFC 7064, 7065).
fn is_ice_url(url: &str) -> bool {
    let rest = ["stun:", "stuns:", "turn:", "turns:"]
        .iter()
        .find_map(|scheme| url.strip_prefix(scheme));
    rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/') && !r.contains(char::is_whitespace))
}

impl Config {
    /// What rooms are configured with: ICE servers, TURN credentials, the
    /// signal size limit.
    pub fn rtc(&self) -> pushgate_core::rtc::RtcConfig {
        use pushgate_core::rtc::{RtcConfig, TurnCredentials};
        let turn = match (
            &self.turn_secret,
            &self.turn_username,
            &self.turn_credential,
        ) {
            (Some(secret), _, _) => TurnCredentials::Secret {
                secret: secret.clone(),
                ttl: self.turn_credential_ttl,
            },
            (None, Some(username), Some(credential)) => TurnCredentials::Fixed {
                username: username.clone(),
                credential: credential.clone(),
            },
            _ => TurnCredentials::None,
        };
        RtcConfig {
            ice_servers: self.ice_servers.clone(),
            turn,
            max_signal_size: self.max_signal_size,
        }
    }

    /// What tokens are checked with, reading the key files named by
    /// `auth_public_key` and `auth_jwks`; an unreadable file is an error
    /// naming it.
    pub fn auth_config(&self) -> Result<AuthConfig, Error> {
        let read = |setting: &str, path: &str| {
            std::fs::read(path).map_err(|e| {
                Error::config(format!("{setting}: cannot read the key file {path}: {e}"))
            })
        };
        let jwks = match &self.auth_jwks {
            Some(path) => Some(String::from_utf8(read("auth.jwks", path)?).map_err(|_| {
                Error::config(format!("auth.jwks: the key file {path} is not UTF-8 JSON"))
            })?),
            None => None,
        };
        Ok(AuthConfig {
            hmac_secret: self.auth_secret.clone(),
            public_key_pem: match &self.auth_public_key {
                Some(path) => Some(read("auth.public_key", path)?),
                None => None,
            },
            jwks_json: jwks,
            audience: self.auth_audience.clone(),
            issuer: self.auth_issuer.clone(),
            allow_no_exp: self.auth_allow_no_exp,
            leeway: self.auth_leeway.as_secs(),
        })
    }

    /// The channel rules this configuration makes: `namespaces` when set
    /// in code, else the file's tables, whose defaults depend on whether a
    /// token key is configured (closed with one, open without).
    pub fn channel_rules(&self) -> pushgate_core::Namespaces {
        let checks = self.auth_secret.is_some()
            || self.auth_public_key.is_some()
            || self.auth_jwks.is_some();
        match &self.namespaces {
            Some(set) => set.clone(),
            None => self.namespace_tables.resolve(checks),
        }
    }

    /// The policy this configuration makes: the token verifier (none when
    /// no key is configured) and the namespaces, whose defaults depend on
    /// whether tokens are checked. A bad key is an error that names its
    /// file.
    pub fn policy(&self) -> Result<Policy, Error> {
        let auth = self.auth_config()?;
        let verifier = if auth.has_key() {
            let names = [
                self.auth_public_key.as_deref().map(|p| format!(" ({p})")),
                self.auth_jwks.as_deref().map(|p| format!(" ({p})")),
            ];
            let files: String = names.into_iter().flatten().collect();
            Some(
                Verifier::new(auth)
                    .map_err(|e| Error::config(format!("auth{files}: {}", e.message())))?,
            )
        } else {
            None
        };
        Ok(
            Policy::new(verifier, self.channel_rules()).with_publish_rate(Rate::new(
                self.client_publish_rate,
                self.client_publish_burst,
                Instant::now(),
            )),
        )
    }
}

/// Parses `500ms`, `25s`, `10m`, `1h`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (num, unit) = text.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (try 500ms, 25s, 10m, 1h)"))?;
    let d = match unit {
        "ms" => Some(Duration::from_millis(n)),
        "" | "s" => Some(Duration::from_secs(n)),
        // Checked: a request's `timeout=` must not overflow (a panic in debug
        // builds, a wrapped small value in release).
        "m" => n.checked_mul(60).map(Duration::from_secs),
        "h" => n.checked_mul(3600).map(Duration::from_secs),
        _ => return Err(format!("{text:?} has an unknown unit (use ms, s, m or h)")),
    };
    d.ok_or_else(|| format!("{text:?} is too long a duration"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_key_file_is_a_startup_error_naming_it() {
        let missing = Config {
            auth_public_key: Some("/nonexistent/key.pem".into()),
            ..Config::default()
        };
        let e = missing.clone().policy().unwrap_err().to_string();
        assert!(e.contains("/nonexistent/key.pem"), "{e}");
        let not_a_key =
            std::env::temp_dir().join(format!("pushgate-bad-{}.pem", std::process::id()));
        std::fs::write(&not_a_key, "not a key").unwrap();
        let path = not_a_key.to_str().unwrap().to_owned();
        let bad = Config {
            auth_jwks: Some(path.clone()),
            ..Config::default()
        };
        let e = bad.clone().policy().unwrap_err().to_string();
        std::fs::remove_file(&not_a_key).unwrap();
        assert!(e.contains(&path), "{e}");
    }

    #[test]
    fn a_key_closes_the_default_channels() {
        let open = Config::default();
        assert!(!open.policy().unwrap().checks_tokens());
        assert_eq!(
            open.channel_rules().default_rules().subscribe,
            pushgate_core::Access::Anyone
        );
        let keyed = Config {
            auth_secret: Some("x".repeat(32)),
            ..Config::default()
        };
        assert!(keyed.policy().unwrap().checks_tokens());
        assert_eq!(
            keyed.channel_rules().default_rules().subscribe,
            pushgate_core::Access::Claim
        );
        let file = Config::from_toml("[auth]\nsecret = \"0123456789abcdef0123456789abcdef\"\n[namespaces.public]\nsubscribe = \"anyone\"\n").unwrap();
        let policy = file.policy().unwrap();
        let public = pushgate_core::ChannelName::new("public:news").unwrap();
        assert!(policy
            .check_subscribe(&pushgate_core::Principal::Anonymous, &public)
            .is_ok());
        assert_eq!(
            file.channel_rules().default_rules().publish,
            pushgate_core::Access::Claim
        );
    }

    #[test]
    fn the_memory_log_keeps_each_namespaces_history() {
        let c = Config::from_toml("[namespaces.chat]\nhistory_size = 5\n").unwrap();
        let chat = pushgate_core::ChannelName::new("chat:a").unwrap();
        let log = c.memory_log();
        assert_eq!(log.namespaces.rules(&chat).history_size, Some(5));
    }

    #[test]
    fn a_publish_rate_needs_a_burst_and_zero_is_no_limit() {
        let c = Config {
            client_publish_burst: 0,
            ..Config::default()
        };
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("client_publish_burst"));
        let unlimited = Config {
            client_publish_rate: 0,
            client_publish_burst: 0,
            ..Config::default()
        };
        assert!(unlimited.validate().is_ok());
        assert!(unlimited.policy().unwrap().publish_rate().is_none());
        let rate = *Config::default().policy().unwrap().publish_rate().unwrap();
        assert_eq!((rate.per_second(), rate.burst()), (100, 200));
    }

    #[test]
    fn admin_needs_an_api_key_or_a_token_key() {
        let bare = Config {
            admin_enabled: true,
            ..Config::default()
        };
        let e = bare.validate().unwrap_err().to_string();
        assert!(e.contains("admin") && e.contains("--api-key"), "{e}");
        for login in [
            |c: &mut Config| c.api_key = Some("k".into()),
            |c: &mut Config| c.auth_secret = Some("s".repeat(32)),
            |c: &mut Config| c.auth_jwks = Some("jwks.json".into()),
            |c: &mut Config| c.auth_public_key = Some("key.pem".into()),
        ] {
            let mut c = bare.clone();
            login(&mut c);
            assert!(c.validate().is_ok());
        }
        let file = Config::from_toml("[admin]\nenabled = true\n[http]\napi_key = \"k\"").unwrap();
        assert!(file.admin_enabled && file.validate().is_ok());
        assert!(!Config::default().admin_enabled, "off unless asked for");
    }

    #[test]
    fn demo_tokens_need_a_secret() {
        let c = Config {
            demo_tokens: true,
            ..Config::default()
        };
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("auth_secret"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("25s").unwrap(), Duration::from_secs(25));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
        assert!(parse_duration("7d").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("9999999999999999999m").is_err());
        assert!(parse_duration("999999999999999999h").is_err());
        assert!(parse_duration("99999999999999999999").is_err());
    }

    #[test]
    fn toml_file() {
        let c = Config::from_toml(
            "listen = \"127.0.0.1:9000\"\nhistory_ttl = \"2m\"\nws_ping_interval = 10\n",
        )
        .unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.history_ttl, Duration::from_secs(120));
        assert_eq!(c.ws_ping_interval, Duration::from_secs(10));
        assert_eq!(c.history_size, 1000);
        assert!(Config::from_toml("histroy_size = 1").is_err());
        assert!(Config::default().validate().is_ok());
        let c = Config::from_toml("worker_threads = 1").unwrap();
        assert_eq!(c.worker_count(), 1);
        assert!(Config::default().worker_count() >= 1);
        assert!(Config::from_toml("worker_threads = 5000")
            .unwrap()
            .validate()
            .is_err());
    }

    fn toml_error(text: &str) -> String {
        Config::from_toml(text).unwrap_err().to_string()
    }

    #[test]
    fn toml_sections() {
        let c = Config::from_toml(
            "[http]\nlisten = \"127.0.0.1:9000\"\nallowed_origins = [\"https://a.example\", \"*\"]\n\
             [history]\nttl = \"2m\"\n\
             [websocket]\nping_interval = \"10s\"\ndeflate = true\n\
             [streams]\nping_interval = 5\n\
             [server]\ndemo = false\n",
        )
        .unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.allowed_origins, ["https://a.example", "*"]);
        assert_eq!(c.history_ttl, Duration::from_secs(120));
        assert_eq!(c.ws_ping_interval, Duration::from_secs(10));
        assert_eq!(c.stream_ping_interval, Duration::from_secs(5));
        assert!(c.ws_deflate);
        assert!(!c.demo);
        assert_eq!(c.history_size, 1000);
    }

    #[test]
    fn toml_mistakes_are_named_with_a_suggestion() {
        let e = toml_error("[websocket]\nping_intervall = \"10s\"");
        assert!(e.contains("`websocket.ping_intervall`"), "{e}");
        assert!(e.contains("`ping_interval` in [websocket]"), "{e}");
        // A flat name, or a key of another section, below a section header.
        let e = toml_error("[websocket]\nhistory_ttl = \"2m\"");
        assert!(e.contains("`ttl` in [history]"), "{e}");
        let e = toml_error("[websocket]\nsse_retry = \"2s\"");
        assert!(e.contains("`sse_retry` in [streams]"), "{e}");
        let e = toml_error("histroy_size = 1");
        assert!(e.contains("`size` in [history]"), "{e}");
        let e = toml_error("[websockets]\nping_interval = 1");
        assert!(
            e.contains("[websockets]") && e.contains("[websocket]?"),
            "{e}"
        );
        let e = toml_error("history = 5");
        assert!(e.contains("section"), "{e}");
        let e = toml_error("history_size = 5\n[history]\nsize = 6");
        assert!(
            e.contains("`history_size`") && e.contains("`history.size`"),
            "{e}"
        );
    }

    #[test]
    fn toml_bad_values_name_the_setting() {
        let e = toml_error("[history]\nttl = \"7d\"");
        assert!(e.contains("`history.ttl`") && e.contains("unit"), "{e}");
        let e = toml_error("history_ttl = \"7d\"");
        assert!(e.contains("`history_ttl`"), "{e}");
        let e = toml_error("[history]\nsize = \"many\"");
        assert!(e.contains("`history.size` must be a whole number"), "{e}");
        let e = toml_error("[history]\nsize = -1");
        assert!(e.contains("`history.size`"), "{e}");
        let e = toml_error("[websocket]\ndeflate_window_bits = 300");
        assert!(e.contains("too large"), "{e}");
        let e = toml_error("[http]\nlisten = \"localhost\"");
        assert!(e.contains("`http.listen`"), "{e}");
        let e = toml_error("[http]\nallowed_origins = \"https://a.example\"");
        assert!(e.contains("list"), "{e}");
        let e = toml_error("[server]\necho = \"maybe\"");
        assert!(
            e.contains("`server.echo`") && e.contains("true or false"),
            "{e}"
        );
        let e = toml_error("[server]\necho = 1.5");
        assert!(e.contains("`server.echo` must be true or false"), "{e}");
    }

    /// A value of `s` other than its default, as its getter shows it.
    fn other_value(s: &Setting) -> &'static str {
        match s.kind {
            Kind::Duration => "3s",
            Kind::Integer => "9",
            Kind::Switch if s.default_text() == "true" => "false",
            Kind::Switch => "true",
            Kind::Address => "10.0.0.1:1",
            // The one text setting with a closed set of values.
            Kind::Text if s.name() == "store.sync" => "never",
            Kind::Text => "k",
            Kind::List => "a,b",
        }
    }

    /// Each setting's setter reads what its getter shows, writes its own
    /// field and no other.
    #[test]
    fn every_setting_round_trips() {
        let defaults = Config::default();
        let shown = |c: &Config| SETTINGS.iter().map(|s| (s.get)(c)).collect::<Vec<_>>();
        for (i, s) in SETTINGS.iter().enumerate() {
            let default = s.default_text();
            let other = other_value(s);
            let mut c = Config::default();
            (s.set)(&mut c, other).unwrap();
            let mut want = shown(&defaults);
            want[i] = other.to_owned();
            assert_eq!(shown(&c), want, "{}", s.name());
            (s.set)(&mut c, &default).unwrap();
            assert_eq!(shown(&c), shown(&defaults), "{}", s.name());
        }
    }

    /// The flag's name (dashes as underscores) is a key of the file, in the
    /// setting's section and at the top level; an inverted switch's flag
    /// name takes the value the flag means (`no_demo = true`: no demo).
    #[test]
    fn every_settings_flag_name_works_in_the_file() {
        for s in SETTINGS {
            let other = other_value(s);
            let written = match (s.kind, s.has(Mark::Inverted)) {
                (Kind::Switch, true) => (other == "false").to_string(),
                _ => template::toml_value(s.kind, other),
            };
            let key = s.flag_key();
            for file in [
                format!("{key} = {written}"),
                format!("[{}]\n{key} = {written}", s.section),
            ] {
                let c = Config::from_toml(&file).unwrap_or_else(|e| panic!("{file}: {e}"));
                assert_eq!((s.get)(&c), other, "{file}");
            }
        }
    }

    #[test]
    fn flag_names_in_the_file() {
        assert!(!Config::from_toml("no_demo = true").unwrap().demo);
        assert!(Config::from_toml("no_demo = false").unwrap().demo);
        assert!(
            !Config::from_toml("[server]\nno_demo = \"yes\"")
                .unwrap()
                .demo
        );
        assert!(
            Config::from_toml("[http]\nno_http2 = \"off\"")
                .unwrap()
                .http2
        );
        assert!(!Config::from_toml("no_http2 = 1").unwrap().http2);
        // `broker` is also a section: as a value it is the flag's setting.
        let c = Config::from_toml("broker = \"redis://h\"").unwrap();
        assert_eq!(c.broker_url.as_deref(), Some("redis://h"));
        let c = Config::from_toml("[http]\nallowed_origin = [\"https://a.example\"]").unwrap();
        assert_eq!(c.allowed_origins, ["https://a.example"]);
        // Two names of one setting, or a flag name in another section.
        let e = toml_error("[server]\ndemo = true\nno_demo = true");
        assert!(e.contains("same setting"), "{e}");
        let e = toml_error("[http]\nno_demo = true");
        assert!(
            e.contains("unknown key `http.no_demo`") && e.contains("[server]"),
            "{e}"
        );
        let e = toml_error("no_demo = \"maybe\"");
        assert!(e.contains("`no_demo`") && e.contains("yes/no"), "{e}");
    }

    #[test]
    fn switches_read_the_usual_words() {
        for (text, want) in [
            ("true", true),
            ("TRUE", true),
            ("1", true),
            ("yes", true),
            ("On", true),
            ("false", false),
            ("0", false),
            ("No", false),
            ("off", false),
        ] {
            assert_eq!(parse_bool(text), Ok(want), "{text}");
            let c = Config::from_toml(&format!("[websocket]\ndeflate = \"{text}\"")).unwrap();
            assert_eq!(c.ws_deflate, want, "{text}");
        }
        assert!(
            Config::from_toml("[websocket]\ndeflate = 1")
                .unwrap()
                .ws_deflate
        );
        assert!(
            !Config::from_toml("[websocket]\ndeflate = 0")
                .unwrap()
                .ws_deflate
        );
        for bad in ["2", "", "y e s", "enabled"] {
            let e = parse_bool(bad).unwrap_err();
            assert!(e.contains("true or false"), "{e}");
        }
    }

    #[test]
    fn addresses_people_write() {
        for (text, want) in [
            ("localhost:8082", "127.0.0.1:8082"),
            (":8081", "0.0.0.0:8081"),
            ("8081", "127.0.0.1:8081"),
            ("[::1]:7070", "[::1]:7070"),
            ("0.0.0.0:7070", "0.0.0.0:7070"),
            ("127.0.0.1:0", "127.0.0.1:0"),
        ] {
            assert_eq!(parse_address(text).unwrap().to_string(), want, "{text}");
        }
        for bad in ["localhost", "example.com:80", "70000", ":x", "", "1.2.3.4"] {
            let e = parse_address(bad).unwrap_err();
            assert!(
                e.contains("localhost:7070") && e.contains(":7070 (every interface)"),
                "{e}"
            );
        }
        let c =
            Config::from_toml("listen = \":9000\"\n[tls]\nredirect = \"localhost:80\"").unwrap();
        assert_eq!(c.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(c.tls_redirect.unwrap().to_string(), "127.0.0.1:80");
    }

    #[test]
    fn settings_are_named_once() {
        let sections = sections();
        let mut seen: [std::collections::HashSet<String>; 4] = Default::default();
        for s in SETTINGS {
            let names = [s.name(), s.field.into(), s.flag.into(), s.env.into()];
            for (seen, name) in seen.iter_mut().zip(names) {
                assert!(!seen.contains(&name), "{name} is used twice");
                seen.insert(name);
            }
            assert!(s.env.starts_with("PUSHGATE_"), "{}", s.env);
            // The flag's name as a key picks this setting and no other.
            for t in SETTINGS.iter().filter(|t| t.field != s.field) {
                assert!(t.field != s.flag_key(), "{} is {}'s flag", t.field, s.flag);
                assert!(
                    t.section != s.section || t.key != s.flag_key(),
                    "{} is {}'s flag",
                    t.name(),
                    s.flag
                );
            }
            assert!(
                !sections.contains(&s.field),
                "{} is also a section",
                s.field
            );
            assert!(!s.help.is_empty() && !s.help.ends_with('.'), "{}", s.name());
            assert!(
                s.kind == Kind::Switch || !s.has(Mark::Inverted),
                "{}",
                s.name()
            );
        }
    }
}
