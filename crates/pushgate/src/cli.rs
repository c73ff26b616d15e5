//! Flags, environment variables and the config file, merged once:
//! flags and `PUSHGATE_*` variables override the TOML file, which overrides
//! the defaults.

use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use pushgate_server::config::{Kind, Mark, Setting, SETTINGS};
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
    Serve(ServeArgs),
    /// Publish one message through the server API.
    Publish(PublishArgs),
    /// Print messages of channels as they arrive, one JSON object per line.
    Subscribe(SubscribeArgs),
    /// Print a development token (HS256, signed with the configured auth
    /// secret; the same config sources as `serve`).
    // `--admin` is the token's claim here. The `admin` setting (the
    // dashboard) means nothing to minting, and PUSHGATE_ADMIN must not make
    // every token an admin's: its flag is moved aside and hidden.
    #[command(mut_arg("admin_enabled", |a| a.long("admin-setting").env(None::<&str>).hide(true)))]
    Token(TokenArgs),
    /// Write a config file, or check one.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print the version, as `--version` does.
    Version,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print a commented TOML file of every setting at its default
    /// (`pushgate config init > pushgate.toml`).
    Init,
    /// Check a config file, and print the settings it makes with the
    /// environment and any flags given (secrets masked), each with where
    /// it came from; exits non-zero on a mistake.
    Check(CheckArgs),
}

#[derive(Args)]
struct CheckArgs {
    /// The TOML file to check [default: --config, PUSHGATE_CONFIG]
    file: Option<PathBuf>,
    #[command(flatten)]
    settings: ServeArgs,
}

/// `serve`'s arguments: `--config`, and a flag per setting of [`SETTINGS`],
/// each also read from its `PUSHGATE_*` variable.
struct ServeArgs {
    config: Option<PathBuf>,
    /// The settings given, with their values as written and where:
    /// `--flag` or the variable's name.
    given: Vec<(&'static Setting, String, String)>,
}

const CONFIG: &str = "config";

impl Args for ServeArgs {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        let config = Arg::new(CONFIG)
            .long("config")
            .env("PUSHGATE_CONFIG")
            .value_name("FILE")
            .value_parser(clap::value_parser!(PathBuf))
            .help(
                "TOML file with any of the settings below, in sections (see docs/configuration.md)",
            );
        SETTINGS
            .iter()
            .fold(cmd.arg(config), |cmd, s| cmd.arg(setting_arg(s)))
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

/// The flag of `s`, its id the field's name. Values are checked by the
/// setting's own parser, so that clap reports a bad one with the flag.
fn setting_arg(s: &'static Setting) -> Arg {
    let mut arg = Arg::new(s.field)
        .long(s.flag)
        .env(s.env)
        .hide_env_values(s.has(Mark::Secret));
    let mut help = s.help.to_owned();
    // A switch's variable reads true/false, 1/0, yes/no, on/off, as the file does.
    let switch = |arg: Arg| {
        arg.action(ArgAction::SetTrue)
            .value_parser(pushgate_server::config::parse_bool)
    };
    let value_name = match s.kind {
        Kind::Switch if s.has(Mark::Inverted) => {
            help.push_str(" [default: on; this flag turns it off]");
            return switch(arg).help(help);
        }
        Kind::Switch => return switch(arg).help(help),
        Kind::List => {
            arg = arg.action(ArgAction::Append).value_delimiter(',');
            help.push_str("; repeat the flag or separate with commas");
            "LIST"
        }
        Kind::Duration => "DURATION",
        Kind::Integer => "N",
        Kind::Address => "ADDR",
        Kind::Text => "TEXT",
    };
    let default = s.default_text();
    if !default.is_empty() {
        help.push_str(&format!(" [default: {default}]"));
    }
    let check = move |text: &str| (s.set)(&mut Config::default(), text).map(|()| text.to_owned());
    arg.value_name(value_name).value_parser(check).help(help)
}

impl FromArgMatches for ServeArgs {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let mut args = ServeArgs {
            config: None,
            given: Vec::new(),
        };
        args.update_from_arg_matches(matches)?;
        Ok(args)
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        if let Some(path) = matches.get_one::<PathBuf>(CONFIG) {
            self.config = Some(path.clone());
        }
        for s in SETTINGS {
            let source = match matches.value_source(s.field) {
                Some(ValueSource::CommandLine) => format!("--{}", s.flag),
                Some(ValueSource::EnvVariable) => s.env.to_owned(),
                // A switch not given is false by default: not a value to apply.
                _ => continue,
            };
            let value = match s.kind {
                // The flag's meaning, or its opposite (`PUSHGATE_NO_DEMO=0`).
                Kind::Switch if matches.get_flag(s.field) => s.flag_value().to_owned(),
                Kind::Switch => (s.flag_value() == "false").to_string(),
                _ => matches
                    .get_many::<String>(s.field)
                    .map(|values| values.map(String::as_str).collect::<Vec<_>>().join(","))
                    .unwrap_or_default(),
            };
            self.given.retain(|(given, _, _)| given.field != s.field);
            self.given.push((s, value, source));
        }
        Ok(())
    }
}

/// Where each setting that is not at its default came from.
type Sources = Vec<(&'static Setting, String)>;

impl ServeArgs {
    /// The defaults, then the file, then flags and variables.
    fn into_config(self) -> Result<Config, Box<dyn std::error::Error>> {
        self.into_config_with_sources().map(|(c, _)| c)
    }

    /// [`ServeArgs::into_config`], and where each setting came from.
    fn into_config_with_sources(self) -> Result<(Config, Sources), Box<dyn std::error::Error>> {
        let (mut c, mut sources) = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
                let (c, set) = Config::from_toml_with_sources(&text)?;
                let file = format!("file {}", path.display());
                (c, set.into_iter().map(|s| (s, file.clone())).collect())
            }
            None => (Config::default(), Sources::new()),
        };
        for (s, value, source) in self.given {
            (s.set)(&mut c, &value).map_err(|e| format!("{source}: {e}"))?;
            sources.retain(|(set, _)| set.field != s.field);
            sources.push((s, source));
        }
        c.validate()?;
        Ok((c, sources))
    }
}

impl CheckArgs {
    /// The effective settings, or the first mistake; key files are read,
    /// as `serve` would at start.
    fn check(mut self) -> Result<String, Box<dyn std::error::Error>> {
        if let Some(file) = self.file.take() {
            self.settings.config = Some(file);
        }
        let named = self.settings.config.clone();
        let (config, sources) = self.settings.into_config_with_sources()?;
        config.policy()?;
        let source_of = |s: &Setting| {
            sources
                .iter()
                .find(|(set, _)| set.field == s.field)
                .map(|(_, source)| source.clone())
        };
        let what = match named {
            Some(path) => format!("{} is valid", path.display()),
            None => "no file given (--config, PUSHGATE_CONFIG)".to_owned(),
        };
        Ok(format!(
            "# pushgate config check: {what}; the settings `serve` would run with:\n\n{}",
            pushgate_server::config::effective(&config, source_of)
        ))
    }
}

#[derive(Args)]
struct PublishArgs {
    /// The channel to publish on, e.g. `news` or `chat:lobby`.
    channel: String,
    /// The message: JSON (quoted for the shell: '{"title":"hello"}'), or
    /// `-` to read it from standard input.
    data: String,
    /// Send DATA as text: a JSON string, whatever it holds.
    #[arg(long)]
    string: bool,
    /// Event name (SSE `event:` field).
    #[arg(long)]
    event: Option<String>,
    /// Server base URL.
    #[arg(long, env = "PUSHGATE_URL", default_value = "http://127.0.0.1:7070")]
    url: String,
    /// The server's API key (sent as Bearer); none: the server must be on
    /// this machine (loopback).
    #[arg(long, env = "PUSHGATE_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
}

#[derive(Args)]
struct SubscribeArgs {
    /// The channels to follow, e.g. `news chat:lobby`.
    #[arg(required = true, value_name = "CHANNEL")]
    channels: Vec<String>,
    /// Resume after this cursor (or `earliest`).
    #[arg(long)]
    since: Option<String>,
    /// Server base URL.
    #[arg(long, env = "PUSHGATE_URL", default_value = "http://127.0.0.1:7070")]
    url: String,
}

#[derive(Args)]
struct TokenArgs {
    /// The user id (`sub`).
    #[arg(long)]
    sub: String,
    /// Channel patterns the user may subscribe to (`chat:*`, exact names);
    /// repeat the flag or separate with commas.
    #[arg(long, value_name = "PATTERN", action = ArgAction::Append, value_delimiter = ',')]
    channels: Vec<String>,
    /// Channel patterns the user may publish to; repeat the flag or
    /// separate with commas.
    #[arg(long, value_name = "PATTERN", action = ArgAction::Append, value_delimiter = ',')]
    publish: Vec<String>,
    /// The user may send direct messages (`"send": true`).
    #[arg(long)]
    send: bool,
    /// An administrator (`"admin": true`): with `serve --admin`, the token
    /// logs in to /admin and calls /api/* like the API key.
    #[arg(long)]
    admin: bool,
    /// How long the token is valid (`exp` = now + this).
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_ttl)]
    ttl: std::time::Duration,
    #[command(flatten)]
    settings: ServeArgs,
}

fn parse_ttl(text: &str) -> Result<std::time::Duration, String> {
    match pushgate_server::config::parse_duration(text)? {
        d if d.is_zero() => Err("the ttl must be above zero".into()),
        d => Ok(d),
    }
}

impl TokenArgs {
    /// The token, signed with the configured secret, issued at `now`
    /// (seconds since the Unix epoch).
    fn mint(self, now: u64) -> Result<String, Box<dyn std::error::Error>> {
        let TokenArgs {
            sub,
            channels,
            publish,
            send,
            admin,
            ttl,
            settings,
        } = self;
        let config = settings.into_config()?;
        let secret = config.auth_secret.as_deref().ok_or(
            "no auth secret to sign with: give --auth-secret, PUSHGATE_AUTH_SECRET or `secret` in [auth] of --config",
        )?;
        // Checked here, so that a mistake is not found by the server.
        for p in channels.iter().chain(&publish) {
            pushgate_core::auth::Pattern::new(p).map_err(|e| format!("{p:?}: {e}"))?;
        }
        let claims = pushgate_core::auth::token::Claims {
            sub: Some(sub),
            iat: Some(now),
            exp: Some(now + ttl.as_secs()),
            channels,
            publish,
            send,
            admin,
            iss: config.auth_issuer.clone(),
            ..Default::default()
        };
        let token = pushgate_core::auth::token::mint_hs256(
            secret,
            &claims,
            config.auth_audience.as_deref(),
        )?;
        Ok(token)
    }
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
            let data = client::publication_data(&a.data, a.string)?;
            let reply = client_runtime()?.block_on(client::publish(
                &a.url,
                a.api_key.as_deref(),
                &a.channel,
                data,
                a.event.as_deref(),
            ))?;
            client::print_line(&reply)?;
        }
        Command::Subscribe(a) => {
            client_runtime()?.block_on(client::subscribe(
                &a.url,
                &a.channels,
                a.since.as_deref(),
            ))?;
        }
        Command::Token(a) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            println!("{}", a.mint(now)?);
        }
        Command::Config(ConfigCommand::Init) => {
            client::print_line(pushgate_server::config::template().trim_end())?;
        }
        Command::Config(ConfigCommand::Check(a)) => {
            client::print_line(a.check()?.trim_end())?;
        }
        Command::Version => {
            client::print_line(Cli::command().render_version().trim_end())?;
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
    // Colours only for a person at a terminal: escape codes in a file or a
    // journal are noise. NO_COLOR (no-color.org) turns them off there too.
    use std::io::IsTerminal;
    let ansi = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
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

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    fn serve(args: &[&str]) -> Result<Config, Box<dyn std::error::Error>> {
        let cli = Cli::try_parse_from(["pushgate", "serve"].iter().chain(args))?;
        match cli.command {
            Command::Serve(args) => args.into_config(),
            _ => unreachable!("parsed as serve"),
        }
    }

    #[test]
    fn commands_are_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn serve_help_shows_every_setting() {
        let mut cli = Cli::command();
        let help = cli
            .find_subcommand_mut("serve")
            .expect("serve")
            .render_long_help()
            .to_string();
        for s in SETTINGS {
            assert!(
                help.contains(&format!("--{} ", s.flag))
                    || help.contains(&format!("--{}\n", s.flag)),
                "{}",
                s.flag
            );
            assert!(help.contains(s.env), "{}", s.env);
        }
        assert!(help.contains("[default: 10m]"), "{help}");
    }

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let path = std::env::temp_dir().join(format!("pushgate-cli-{}.toml", std::process::id()));
        std::fs::write(
            &path,
            "[history]\nttl = \"5m\"\nsize = 7\n[server]\ndemo = true\n",
        )
        .unwrap();
        let c = serve(&[
            "--config",
            path.to_str().unwrap(),
            "--history-ttl",
            "2m",
            "--no-demo",
            "--ws-deflate",
            "--allowed-origin",
            "https://a.example",
            "--allowed-origin",
            "https://b.example,https://c.example",
        ]);
        std::fs::remove_file(&path).unwrap();
        let c = c.unwrap();
        assert_eq!(c.history_ttl, std::time::Duration::from_secs(120));
        assert_eq!(c.history_size, 7);
        assert!(!c.demo && c.ws_deflate && !c.echo);
        assert_eq!(
            c.allowed_origins,
            [
                "https://a.example",
                "https://b.example",
                "https://c.example"
            ]
        );
        assert_eq!(c.ws_ping_interval, Config::default().ws_ping_interval);
    }

    fn token(args: &[&str]) -> Result<String, Box<dyn std::error::Error>> {
        let cli = Cli::try_parse_from(["pushgate", "token"].iter().chain(args))?;
        match cli.command {
            Command::Token(args) => args.mint(1_000),
            _ => unreachable!("parsed as token"),
        }
    }

    const SECRET: &str = "a-secret-of-at-least-32-bytes-for-tests";

    #[test]
    fn token_mints_what_the_server_checks() {
        use pushgate_core::auth::token::{AuthConfig, Verifier};
        let t = token(&[
            "--sub",
            "alice",
            "--channels",
            "chat:*,news",
            "--channels",
            "#alice",
            "--publish",
            "chat:*",
            "--send",
            "--ttl",
            "10m",
            "--auth-secret",
            SECRET,
            "--auth-audience",
            "app",
        ])
        .unwrap();
        let verifier = Verifier::new(AuthConfig {
            hmac_secret: Some(SECRET.into()),
            audience: Some("app".into()),
            ..Default::default()
        })
        .unwrap();
        let user = verifier.verify(&t, 1_001).unwrap();
        assert_eq!(&*user.id, "alice");
        assert_eq!(user.expires, Some(1_600));
        assert!(user.channels.matches("chat:x") && user.channels.matches("news"));
        assert!(user.channels.matches("#alice") && user.send);
        assert!(user.publish.matches("chat:y") && !user.publish.matches("news"));
        let other = Verifier::new(AuthConfig {
            hmac_secret: Some("another-secret-of-at-least-32-bytes!!".into()),
            audience: Some("app".into()),
            ..Default::default()
        })
        .unwrap();
        assert!(
            other.verify(&t, 1_001).is_err(),
            "another secret refuses it"
        );
    }

    #[test]
    fn token_admin_is_the_claim_not_the_setting() {
        use pushgate_core::auth::token::{AuthConfig, Verifier};
        let verifier = Verifier::new(AuthConfig {
            hmac_secret: Some(SECRET.into()),
            ..Default::default()
        })
        .unwrap();
        let admin = token(&["--sub", "ops", "--admin", "--auth-secret", SECRET]).unwrap();
        assert!(verifier.verify(&admin, 1_001).unwrap().admin);
        let plain = token(&["--sub", "ops", "--auth-secret", SECRET]).unwrap();
        assert!(!verifier.verify(&plain, 1_001).unwrap().admin);
        let mut cli = Cli::command();
        let help = cli
            .find_subcommand_mut("token")
            .expect("token")
            .render_long_help()
            .to_string();
        assert!(
            help.contains("\"admin\": true") && !help.contains("PUSHGATE_ADMIN"),
            "{help}"
        );
    }

    #[test]
    fn token_without_a_secret_says_where_to_give_one() {
        let e = token(&["--sub", "alice"]).unwrap_err().to_string();
        assert!(e.contains("--auth-secret"), "{e}");
        let long = "c".repeat(1000);
        let e = token(&["--sub", "a", "--channels", &long, "--auth-secret", SECRET])
            .unwrap_err()
            .to_string();
        assert!(e.contains("channel pattern"), "{e}");
    }

    #[test]
    fn listen_takes_a_port_localhost_and_every_interface() {
        let listen = |a: &str| serve(&["--listen", a]).unwrap().listen.to_string();
        assert_eq!(listen("8081"), "127.0.0.1:8081");
        assert_eq!(listen(":8081"), "0.0.0.0:8081");
        assert_eq!(listen("localhost:8082"), "127.0.0.1:8082");
        assert_eq!(listen("[::1]:7070"), "[::1]:7070");
        let e = serve(&["--listen", "localhost"]).unwrap_err().to_string();
        assert!(
            e.contains("--listen") && e.contains("localhost:7070"),
            "{e}"
        );
    }

    #[test]
    fn switch_flags_take_no_value() {
        let c = serve(&["--no-demo", "--ws-deflate", "--no-http2"]).unwrap();
        assert!(!c.demo && c.ws_deflate && !c.http2);
        assert!(serve(&["--ws-deflate=yes"]).is_err());
    }

    #[test]
    fn bad_values_name_the_flag() {
        let e = serve(&["--history-ttl", "7d"]).unwrap_err().to_string();
        assert!(e.contains("--history-ttl") && e.contains("unit"), "{e}");
        let e = serve(&["--ws-deflate-window-bits", "300"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--ws-deflate-window-bits"), "{e}");
        let e = serve(&["--worker-threads", "5000"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("worker_threads"), "{e}");
    }
}
