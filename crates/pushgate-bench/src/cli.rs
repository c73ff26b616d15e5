//! Command-line flags. `BenchArgs` is a `clap::Args` so that the main
//! `pushgate` binary can mount it as `pushgate bench …`.

use clap::{Args, Subcommand, ValueEnum};

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub command: BenchCommand,
}

impl BenchArgs {
    pub fn common(&self) -> &CommonArgs {
        match &self.command {
            BenchCommand::Idle(a) => &a.common,
            BenchCommand::Fanout(a) => &a.common,
        }
    }

    /// Whether the caller should print the report as JSON.
    pub fn json(&self) -> bool {
        self.common().json
    }
}

#[derive(Debug, Clone, Subcommand)]
pub enum BenchCommand {
    /// Open idle subscribers and measure the server's memory per connection
    Idle(IdleArgs),
    /// Publish to subscribers and measure delivery rate, loss, order and latency
    Fanout(FanoutArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Transport {
    Ws,
    Sse,
    #[value(name = "longpoll")]
    LongPoll,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Ws => "ws",
            Transport::Sse => "sse",
            Transport::LongPoll => "longpoll",
        }
    }
}

/// What speaks at the other end of a plain-mode (`--sub-url`) connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum Peer {
    /// Messages are the published bodies as they are (any envelope is fine:
    /// the payload marker is searched for)
    #[default]
    Plain,
    /// Socket.IO v4 over a WebSocket-only Engine.IO connection: answers the
    /// open packet with a namespace connect (`40`), counts as subscribed on the
    /// server's `40`, answers pings (`2`) with pongs (`3`); events (`42[…]`)
    /// are searched for the marker
    #[value(name = "socketio")]
    SocketIo,
}

#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// Base URL of a pushgate server (loopback only)
    #[arg(long, default_value = "http://127.0.0.1:7070")]
    pub url: String,

    /// How subscribers connect to pushgate. With --sub-url, the scheme decides
    /// (ws:// WebSocket, http:// a stream read as SSE or lines) unless this is
    /// `longpoll`: then http:// is polled nchan-style (Last-Modified/Etag sent
    /// back as If-Modified-Since/If-None-Match)
    #[arg(long, short = 't', value_enum, default_value_t = Transport::Ws)]
    pub transport: Transport,

    /// Subscriber connections to open
    #[arg(
        long,
        short = 'c',
        visible_alias = "subscribers",
        default_value_t = 100
    )]
    pub connections: usize,

    /// Channel name; with several channels, names are CHANNEL-0, CHANNEL-1, …
    #[arg(long, default_value = "bench")]
    pub channel: String,

    /// Channels each connection subscribes to (pushgate: repeated channel= parameters)
    #[arg(long, default_value_t = 1)]
    pub channels_per_conn: usize,

    /// Give every connection its own channels ("personal notifications")
    #[arg(long)]
    pub distinct_channels: bool,

    /// Spread the connections over N channels, one each: connection i
    /// subscribes to CHANNEL-(i mod N), message k goes to CHANNEL-(k mod N).
    /// --connections must be a multiple of N, so that generator processes
    /// with the same N share the same channels
    #[arg(long, value_name = "N", conflicts_with = "distinct_channels")]
    pub channels: Option<usize>,

    /// Plain mode for other servers: a ws:// or http:// URL that subscribes on
    /// connect; `{channel}` in it is replaced by the channel name
    #[arg(long, value_name = "URL")]
    pub sub_url: Option<String>,

    /// Plain mode: the protocol on top of the --sub-url WebSocket
    #[arg(long, value_enum, default_value_t = Peer::Plain)]
    pub peer: Peer,

    /// Server process to read RSS and CPU time of (from /proc/PID)
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,

    /// Hard limit on the whole run, in seconds
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    pub timeout: u64,

    /// Generator worker threads (1 = a current-thread runtime)
    #[arg(long, default_value_t = 1)]
    pub threads: usize,

    /// Connection handshakes in flight at once
    #[arg(long, default_value_t = 200, value_name = "N")]
    pub connect_concurrency: usize,

    /// Connections per source address before moving on to 127.0.0.2, 127.0.0.3, …
    /// [default: 25000, or less if the ephemeral port range is smaller]
    #[arg(long, value_name = "N")]
    pub conns_per_source: Option<usize>,

    /// Bind every client socket (publishers too) to this loopback address,
    /// and to the next ones past --conns-per-source, instead of 127.0.0.1,
    /// 127.0.0.2, …: several generator processes then each have addresses
    /// of their own
    #[arg(long, value_name = "IP")]
    pub source_ip: Option<std::net::IpAddr>,

    /// WebSocket: offer permessage-deflate (RFC 7692) and inflate compressed
    /// messages. The report says on how many connections the server accepted
    /// it
    #[arg(long)]
    pub ws_deflate: bool,

    /// Connect over TLS: wss:// and https:// (ALPN http/1.1; h2 with
    /// --h2-connections), publishes too. Implied by https:// or wss:// URLs.
    /// Needs --tls-ca or --tls-insecure
    #[arg(long)]
    pub tls: bool,

    /// TLS: trust the certificates in this PEM file (a self-signed
    /// certificate is its own anchor if it is not marked as a CA)
    #[arg(long, value_name = "FILE", conflicts_with = "tls_insecure")]
    pub tls_ca: Option<String>,

    /// TLS: accept any certificate (self-signed test certificates); the
    /// handshake's signature is still checked
    #[arg(long)]
    pub tls_insecure: bool,

    /// SSE: open the subscribers' streams on N HTTP/2 connections (subscriber
    /// i on connection i mod N): with --tls by ALPN h2, else h2c (prior
    /// knowledge)
    #[arg(long, value_name = "N")]
    pub h2_connections: Option<usize>,

    /// pushgate: a client token (JWT) every subscriber presents, as the
    /// `token=` query parameter
    #[arg(long, value_name = "JWT")]
    pub token: Option<String>,

    /// Long-poll: the timeout= each poll asks the server for, in seconds
    #[arg(long, default_value_t = 25, value_name = "SECS")]
    pub poll_timeout: u64,

    /// Print the final report as one JSON object
    #[arg(long)]
    pub json: bool,

    /// No progress line on stderr
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

#[derive(Debug, Clone, Args)]
pub struct IdleArgs {
    #[command(flatten)]
    pub common: CommonArgs,

    /// Seconds to wait once all are subscribed before reading the server's RSS
    #[arg(long, default_value_t = 2.0, value_name = "SECS")]
    pub settle: f64,
}

#[derive(Debug, Clone, Args)]
pub struct FanoutArgs {
    #[command(flatten)]
    pub common: CommonArgs,

    /// Messages to publish in total (spread round-robin over the channels)
    #[arg(long, short = 'm', default_value_t = 1000)]
    pub messages: u64,

    /// Messages per second over all publishers; 0 = back to back
    #[arg(long, short = 'r', default_value_t = 100.0)]
    pub rate: f64,

    /// Payload size in bytes (the JSON string holding the marker and padding)
    #[arg(long, default_value_t = 100, value_name = "BYTES")]
    pub size: usize,

    /// Keep-alive publishing connections (each channel is pinned to one)
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub publishers: usize,

    /// Plain mode: URL the payload is POSTed to; `{channel}` is replaced
    #[arg(long, value_name = "URL")]
    pub pub_url: Option<String>,

    /// After publishing, stop waiting once no delivery arrived for this long
    #[arg(long, default_value_t = 5.0, value_name = "SECS")]
    pub drain: f64,

    /// Seconds to wait once all are subscribed before publishing
    #[arg(long, default_value_t = 0.5, value_name = "SECS")]
    pub settle: f64,

    /// The run's id (8 hex digits) instead of a random one, so that several
    /// generator processes share one run: one --publish-only, the others
    /// --receive-only
    #[arg(long, value_name = "HEX")]
    pub run_id: Option<String>,

    /// Publish nothing: once all are subscribed (and --settle passed), print
    /// `ready N` on stdout, wait for a line on stdin, then count the
    /// --messages of --run-id another process publishes, until all arrived
    /// or --drain passed without one; then print `done N` (N deliveries) and
    /// wait for another line before closing the connections and reporting
    /// (so a caller can read CPU times before any connection closes)
    #[arg(long, requires = "run_id", conflicts_with = "publish_only")]
    pub receive_only: bool,

    /// Open no subscriber: only publish the --messages of --run-id (to
    /// --channels channels, or one), for --receive-only processes to count
    #[arg(long, requires = "run_id")]
    pub publish_only: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Parser, Subcommand};

    /// The shape the main `pushgate` binary uses to mount these flags.
    #[derive(Parser)]
    struct Pushgate {
        #[command(subcommand)]
        command: Command,
    }

    #[derive(Subcommand)]
    enum Command {
        Bench(BenchArgs),
    }

    #[test]
    fn mounts_as_pushgate_bench() {
        let cli = Pushgate::try_parse_from([
            "pushgate",
            "bench",
            "fanout",
            "--subscribers",
            "7",
            "-t",
            "longpoll",
            "--json",
            "--rate",
            "0",
        ])
        .unwrap();
        let Command::Bench(args) = cli.command;
        assert!(args.json());
        assert_eq!(args.common().connections, 7);
        assert_eq!(args.common().transport, Transport::LongPoll);
        let BenchCommand::Fanout(f) = &args.command else {
            panic!("fanout expected")
        };
        assert_eq!(f.rate, 0.0);
        assert!(
            Pushgate::try_parse_from(["pushgate", "bench", "idle", "-t", "carrier-pigeon"])
                .is_err()
        );
    }
}
