//! Server configuration: defaults, the TOML file, and durations written for people.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::error::Error;

/// Everything `pushgate serve` can be told. The CLI fills it from flags,
/// `PUSHGATE_*` variables and an optional TOML file (flags win).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on (default `127.0.0.1:7070`).
    pub listen: SocketAddr,
    /// Bearer key for `/api/*`. Without one the API answers loopback peers only.
    pub api_key: Option<String>,
    /// Publications kept per channel.
    pub history_size: usize,
    /// How long a publication stays in history.
    #[serde(deserialize_with = "de_duration")]
    pub history_ttl: Duration,
    /// Interval of WebSocket Ping frames.
    #[serde(deserialize_with = "de_duration")]
    pub ws_ping_interval: Duration,
    /// A WebSocket that sends nothing (not even Pong) for this long is closed.
    #[serde(deserialize_with = "de_duration")]
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
    #[serde(deserialize_with = "de_duration")]
    pub direct_write_gap: Duration,
    /// Keep-alive interval of streaming responses: SSE `: ping` comments,
    /// NDJSON `{"type":"ping"}` lines, iframe `<!-- ping -->` comments.
    #[serde(deserialize_with = "de_duration")]
    pub stream_ping_interval: Duration,
    /// The `retry:` hint sent first on SSE streams.
    #[serde(deserialize_with = "de_duration")]
    pub sse_retry: Duration,
    /// How long `/longpoll` holds a request when it gives no `timeout`.
    #[serde(deserialize_with = "de_duration")]
    pub longpoll_timeout: Duration,
    /// The longest `timeout` a `/longpoll` request may ask for.
    #[serde(deserialize_with = "de_duration")]
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
    /// Log as JSON lines rather than human-readable text.
    pub log_json: bool,
    /// On SIGTERM or Ctrl-C: how long to wait for connections to end after
    /// telling them to (WebSocket 1012, streams ended, long-polls answered).
    #[serde(deserialize_with = "de_duration")]
    pub shutdown_timeout: Duration,
    /// Worker threads that serve connections. 0 (the default): one per CPU
    /// this process may run on.
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
            ws_ping_interval: Duration::from_secs(25),
            ws_idle_timeout: Duration::from_secs(60),
            ws_deflate: false,
            ws_deflate_window_bits: 15,
            ws_deflate_min_size: 128,
            direct_write_gap: Duration::from_millis(10),
            stream_ping_interval: Duration::from_secs(15),
            sse_retry: Duration::from_secs(2),
            longpoll_timeout: Duration::from_secs(25),
            longpoll_max_timeout: Duration::from_secs(120),
            allowed_origins: Vec::new(),
            max_message_size: 64 * 1024,
            outbox_capacity: 1024,
            max_subscriptions: 128,
            log_json: false,
            shutdown_timeout: Duration::from_secs(10),
            worker_threads: 0,
            demo: true,
            echo: false,
        }
    }
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

    /// Reads a TOML file; unknown keys are errors so typos do not pass silently.
    pub fn from_toml(text: &str) -> Result<Self, Error> {
        toml::from_str(text).map_err(|e| Error::config(format!("config file: {e}")))
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
            (self.worker_threads > 1024, "worker_threads must be at most 1024"),
        ];
        match checks.iter().find(|(bad, _)| *bad) {
            Some((_, why)) => Err(Error::config(*why)),
            None => Ok(()),
        }
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

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Secs(u64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Secs(s) => Ok(Duration::from_secs(s)),
        Raw::Text(t) => parse_duration(&t).map_err(serde::de::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
