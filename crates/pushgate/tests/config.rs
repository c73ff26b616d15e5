//! `pushgate config init`, `config check` and `version`, run as the
//! binary: one name per setting across flag, file and variable, switches
//! in the words people write, and mistakes named with a non-zero exit.

mod common;

use std::process::{Command, Output};

use common::TempDir;
use pushgate_server::config::SETTINGS;
use pushgate_server::Config;

/// Runs `pushgate ARGS` with `env` and no `PUSHGATE_*` of the caller's.
fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pushgate"));
    cmd.args(args);
    for (name, _) in std::env::vars() {
        if name.starts_with("PUSHGATE_") {
            cmd.env_remove(name);
        }
    }
    cmd.envs(env.iter().copied())
        .output()
        .expect("pushgate runs")
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn failure(out: &Output) -> String {
    assert!(!out.status.success(), "succeeded: {:?}", out);
    String::from_utf8(out.stderr.clone()).unwrap()
}

/// The line of `check`'s output that sets `key`.
fn line<'a>(text: &'a str, key: &str) -> &'a str {
    let prefix = format!("{key} = ");
    text.lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no {key} in {text}"))
}

#[test]
fn config_init_prints_a_file_of_the_defaults_that_check_accepts() {
    let text = stdout(&run(&["config", "init"], &[]));
    let c = Config::from_toml(&text).unwrap();
    let shown = |c: &Config| SETTINGS.iter().map(|s| (s.get)(c)).collect::<Vec<_>>();
    assert_eq!(shown(&c), shown(&Config::default()));
    let dir = TempDir::new("config-init");
    std::fs::create_dir_all(&dir.0).unwrap();
    let file = dir.0.join("pushgate.toml");
    std::fs::write(&file, &text).unwrap();
    let checked = stdout(&run(&["config", "check", file.to_str().unwrap()], &[]));
    assert!(checked.contains("is valid"), "{checked}");
    assert!(line(&checked, "ttl").contains("# file"), "{checked}");
}

#[test]
fn config_check_shows_the_effective_settings_with_secrets_masked() {
    let dir = TempDir::new("config-check");
    std::fs::create_dir_all(&dir.0).unwrap();
    let file = dir.0.join("pushgate.toml");
    std::fs::write(
        &file,
        "no_demo = \"yes\"\n[http]\napi_key = \"file-key-123\"\n[history]\nsize = 5\n\
         [websocket]\ndeflate = true\n",
    )
    .unwrap();
    let out = stdout(&run(
        &[
            "config",
            "check",
            file.to_str().unwrap(),
            "--history-ttl",
            "2m",
        ],
        &[
            ("PUSHGATE_WS_DEFLATE", "off"),
            (
                "PUSHGATE_AUTH_SECRET",
                "a-secret-of-at-least-32-bytes-for-tests",
            ),
            ("PUSHGATE_BROKER", "redis://me:pw@127.0.0.1:6379"),
        ],
    ));
    assert!(
        !out.contains("file-key-123") && !out.contains("for-tests"),
        "{out}"
    );
    assert!(!out.contains(":pw@"), "{out}");
    assert!(line(&out, "api_key").contains("\"***\""), "{out}");
    assert!(
        line(&out, "secret").contains("# PUSHGATE_AUTH_SECRET"),
        "{out}"
    );
    assert!(
        line(&out, "url").contains("redis://me:***@127.0.0.1:6379"),
        "{out}"
    );
    assert!(line(&out, "size").starts_with("size = 5 ") && line(&out, "size").contains("# file"));
    assert!(line(&out, "ttl").contains("\"2m\"") && line(&out, "ttl").contains("# --history-ttl"));
    // The variable wins over the file, in either direction.
    let deflate = line(&out, "deflate");
    assert!(deflate.starts_with("deflate = false") && deflate.contains("PUSHGATE_WS_DEFLATE"));
    assert!(line(&out, "demo").starts_with("demo = false"), "{out}");
    assert!(line(&out, "ping_interval").contains("# default"), "{out}");
}

#[test]
fn switch_variables_take_the_usual_words_and_the_flags_name() {
    for (value, demo) in [("1", false), ("yes", false), ("TRUE", false), ("on", false)]
        .into_iter()
        .chain([("0", true), ("no", true), ("false", true), ("Off", true)])
    {
        let out = stdout(&run(&["config", "check"], &[("PUSHGATE_NO_DEMO", value)]));
        let want = format!("demo = {demo} ");
        assert!(line(&out, "demo").starts_with(&want), "{value}: {out}");
    }
    let e = failure(&run(&["config", "check"], &[("PUSHGATE_NO_DEMO", "maybe")]));
    assert!(e.contains("maybe") && e.contains("yes/no"), "{e}");
}

#[test]
fn config_check_names_each_mistake_and_fails() {
    let dir = TempDir::new("config-mistakes");
    std::fs::create_dir_all(&dir.0).unwrap();
    let file = dir.0.join("bad.toml");
    let check = |text: &str, env: &[(&str, &str)]| {
        std::fs::write(&file, text).unwrap();
        failure(&run(&["config", "check", file.to_str().unwrap()], env))
    };
    let e = check("[websocket]\nping_intervall = \"10s\"\n", &[]);
    assert!(
        e.contains("unknown key `websocket.ping_intervall`")
            && e.contains("did you mean `ping_interval` in [websocket]"),
        "{e}"
    );
    let e = check("[history]\nttl = \"7d\"\n", &[]);
    assert!(e.contains("`history.ttl`") && e.contains("unit"), "{e}");
    let e = check("[http]\nlisten = \"localhost\"\n", &[]);
    assert!(
        e.contains("`http.listen`") && e.contains(":7070 (every interface)"),
        "{e}"
    );
    let e = check("", &[("PUSHGATE_HISTORY_SIZE", "many")]);
    assert!(
        e.contains("PUSHGATE_HISTORY_SIZE") || e.contains("--history-size"),
        "{e}"
    );
    assert!(e.contains("many"), "{e}");
    let e = check(
        "[websocket]\nping_interval = \"1m\"\nidle_timeout = \"30s\"\n",
        &[],
    );
    assert!(e.contains("ws_idle_timeout"), "{e}");
    let e = check("[auth]\njwks = \"/nonexistent/jwks.json\"\n", &[]);
    assert!(e.contains("/nonexistent/jwks.json"), "{e}");
    let e = failure(&run(
        &["config", "check", "/nonexistent/pushgate.toml"],
        &[],
    ));
    assert!(
        e.contains("cannot read config file /nonexistent/pushgate.toml"),
        "{e}"
    );
}

#[test]
fn version_prints_what_dash_dash_version_prints() {
    let version = stdout(&run(&["version"], &[]));
    assert_eq!(version, stdout(&run(&["--version"], &[])));
    assert_eq!(
        version.trim(),
        format!("pushgate {}", env!("CARGO_PKG_VERSION"))
    );
}
