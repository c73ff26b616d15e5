//! Flags, environment variables and the config file, merged once:
//! flags and `PUSHGATE_*` variables override the TOML file, which overrides
//! the defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use pushgate_server::config::parse_duration;
use pushgate_server::{Config, Server};

use crate::client;

#[derive(Parser)]
#[command(
    name = "pushgate",
    version,
    about = "A real-time push server: WebSocket, SSE and more, one model, resume anywhere"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (in memory; demo at http://127.0.0.1:7070/).
    Serve(Box<ServeArgs>),
    /// Publish one message through the server API.
    Publish(PublishArgs),
    /// Print messages of channels as they arrive, one JSON object per line.
    Subscribe(SubscribeArgs),
}

fn duration(s: &str) -> Result<Duration, String> {
    parse_duration(s)
}

#[derive(Args)]
struct ServeArgs {
    /// TOML file with any of the settings below (snake_case keys).
    #[arg(long, env = "PUSHGATE_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:7070].
    #[arg(long, env = "PUSHGATE_LISTEN")]
    listen: Option<SocketAddr>,
    /// Bearer key for /api/*; without one the API answers loopback clients only.
    #[arg(long, env = "PUSHGATE_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Messages kept per channel [default: 1000].
    #[arg(long, env = "PUSHGATE_HISTORY_SIZE")]
    history_size: Option<usize>,
    /// How long messages stay in history, e.g. 10m [default: 10m].
    #[arg(long, env = "PUSHGATE_HISTORY_TTL", value_parser = duration)]
    history_ttl: Option<Duration>,
    /// WebSocket ping interval [default: 25s].
    #[arg(long, env = "PUSHGATE_WS_PING_INTERVAL", value_parser = duration)]
    ws_ping_interval: Option<Duration>,
    /// Close WebSockets silent for this long [default: 60s].
    #[arg(long, env = "PUSHGATE_WS_IDLE_TIMEOUT", value_parser = duration)]
    ws_idle_timeout: Option<Duration>,
    /// Accept permessage-deflate (RFC 7692, no context takeover) when clients offer it.
    #[arg(long, env = "PUSHGATE_WS_DEFLATE")]
    ws_deflate: bool,
    /// Largest compression window, 9-15 (2^N bytes) [default: 15].
    #[arg(long, env = "PUSHGATE_WS_DEFLATE_WINDOW_BITS")]
    ws_deflate_window_bits: Option<u8>,
    /// WebSocket messages shorter than this are sent uncompressed [default: 128].
    #[arg(long, env = "PUSHGATE_WS_DEFLATE_MIN_SIZE")]
    ws_deflate_min_size: Option<usize>,
    /// Two messages in a row this close to the previous one of their channel
    /// make a burst, which goes through the queues instead of straight to
    /// sockets; 0 = always straight [default: 10ms].
    #[arg(long, env = "PUSHGATE_DIRECT_WRITE_GAP", value_parser = duration)]
    direct_write_gap: Option<Duration>,
    /// Keep-alive interval of SSE, NDJSON and iframe streams [default: 15s].
    #[arg(long, env = "PUSHGATE_STREAM_PING_INTERVAL", value_parser = duration)]
    stream_ping_interval: Option<Duration>,
    /// SSE reconnect hint sent as `retry:` [default: 2s].
    #[arg(long, env = "PUSHGATE_SSE_RETRY", value_parser = duration)]
    sse_retry: Option<Duration>,
    /// How long /longpoll holds a request by default [default: 25s].
    #[arg(long, env = "PUSHGATE_LONGPOLL_TIMEOUT", value_parser = duration)]
    longpoll_timeout: Option<Duration>,
    /// The longest timeout a /longpoll request may ask for [default: 120s].
    #[arg(long, env = "PUSHGATE_LONGPOLL_MAX_TIMEOUT", value_parser = duration)]
    longpoll_max_timeout: Option<Duration>,
    /// Origin allowed to use the HTTP transports from a browser (CORS); repeat, or `*` for any.
    #[arg(
        long = "allowed-origin",
        env = "PUSHGATE_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    allowed_origins: Vec<String>,
    /// Largest message, command or publish body in bytes [default: 65536].
    #[arg(long, env = "PUSHGATE_MAX_MESSAGE_SIZE")]
    max_message_size: Option<usize>,
    /// Events queued per connection before it is cut off as too slow [default: 1024].
    #[arg(long, env = "PUSHGATE_OUTBOX_CAPACITY")]
    outbox_capacity: Option<usize>,
    /// Subscriptions per connection [default: 128].
    #[arg(long, env = "PUSHGATE_MAX_SUBSCRIPTIONS")]
    max_subscriptions: Option<usize>,
    /// Worker threads serving connections; 0 = one per CPU this process may use [default: 0].
    #[arg(long, env = "PUSHGATE_WORKER_THREADS")]
    worker_threads: Option<usize>,
    /// Log JSON lines instead of text.
    #[arg(long, env = "PUSHGATE_LOG_JSON")]
    log_json: bool,
    /// On SIGTERM/Ctrl-C, how long to wait for connections to end [default: 10s].
    #[arg(long, env = "PUSHGATE_SHUTDOWN_TIMEOUT", value_parser = duration)]
    shutdown_timeout: Option<Duration>,
    /// Expose /echo, a WebSocket echo through the /ws code path, for conformance
    /// tests (Autobahn). Never in production.
    #[arg(long, env = "PUSHGATE_ECHO")]
    echo: bool,
    /// Do not serve the demo page or publish the demo clock.
    #[arg(long, env = "PUSHGATE_NO_DEMO")]
    no_demo: bool,
}

impl ServeArgs {
    fn into_config(self) -> Result<Config, Box<dyn std::error::Error>> {
        let mut c = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
                Config::from_toml(&text)?
            }
            None => Config::default(),
        };
        macro_rules! set {
            ($($field:ident),*) => { $( if let Some(v) = self.$field { c.$field = v.into(); } )* };
        }
        set!(
            listen,
            history_size,
            history_ttl,
            ws_ping_interval,
            ws_idle_timeout,
            ws_deflate_window_bits,
            ws_deflate_min_size,
            direct_write_gap,
            stream_ping_interval,
            sse_retry,
            longpoll_timeout,
            longpoll_max_timeout,
            shutdown_timeout,
            max_message_size,
            outbox_capacity,
            max_subscriptions,
            worker_threads
        );
        if !self.allowed_origins.is_empty() {
            c.allowed_origins = self.allowed_origins;
        }
        if self.api_key.is_some() {
            c.api_key = self.api_key;
        }
        c.log_json |= self.log_json;
        c.echo |= self.echo;
        c.ws_deflate |= self.ws_deflate;
        if self.no_demo {
            c.demo = false;
        }
        c.validate()?;
        Ok(c)
    }
}

#[derive(Args)]
struct PublishArgs {
    channel: String,
    /// JSON, or any other text (sent as a JSON string).
    data: String,
    /// Event name (SSE `event:` field).
    #[arg(long)]
    event: Option<String>,
    /// Server base URL.
    #[arg(long, env = "PUSHGATE_URL", default_value = "http://127.0.0.1:7070")]
    url: String,
    #[arg(long, env = "PUSHGATE_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
}

#[derive(Args)]
struct SubscribeArgs {
    #[arg(required = true)]
    channels: Vec<String>,
    /// Resume after this cursor (or `earliest`).
    #[arg(long)]
    since: Option<String>,
    /// Server base URL.
    #[arg(long, env = "PUSHGATE_URL", default_value = "http://127.0.0.1:7070")]
    url: String,
}

pub fn run() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            let config = args.into_config()?;
            init_logging(config.log_json);
            // The server runs on a worker, not on the main thread that waits
            // for it: the accept loop and the connections it spawns then
            // allocate from the same malloc arena (with one worker, measured:
            // 0.1-0.3 KiB less per idle connection) and accepting a
            // connection wakes no other thread.
            runtime(config.worker_count())?.block_on(async {
                tokio::spawn(async {
                    let server = Server::bind(config).await?;
                    server.run(shutdown_signal()).await
                })
                .await
            })??;
        }
        Command::Publish(a) => {
            let reply = client_runtime()?.block_on(client::publish(
                &a.url,
                a.api_key.as_deref(),
                &a.channel,
                &a.data,
                a.event.as_deref(),
            ))?;
            println!("{reply}");
        }
        Command::Subscribe(a) => {
            client_runtime()?.block_on(client::subscribe(
                &a.url,
                &a.channels,
                a.since.as_deref(),
            ))?;
        }
    }
    Ok(())
}

/// The server's runtime. Always tokio's multi-thread scheduler, even with one
/// worker: its LIFO slot runs a task woken by I/O (a publisher's next
/// request) before the tasks a fan-out just woke, so in a burst messages
/// pile up in the connections' queues and leave several per write. The
/// current-thread scheduler runs tasks strictly in turn: measured, bursts to
/// 1,000 WebSockets fell from 529,000 to 147,000 deliveries/s with it, and
/// isolated messages cost no less.
fn runtime(workers: usize) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers.max(1))
        .enable_all()
        .build()
}

/// The CLI's own client commands: one thread is plenty.
fn client_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

fn init_logging(json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}
