//! `docs/configuration.md`, written from [`SETTINGS`] so that it cannot drift
//! from what the server reads.

use std::fmt::Write;

use super::{sections, Mark, SETTINGS};

/// A file in the documented form; the reference shows it, a test reads it.
const EXAMPLE: &str = r#"[http]
listen = "0.0.0.0:7070"
allowed_origins = ["https://app.example.com"]

[history]
ttl = "1h"

[websocket]
deflate = true

[server]
log_json = true
"#;

/// The command that rewrites the reference.
const BLESS: &str = "PUSHGATE_BLESS=1 cargo test -p pushgate-server --lib config";

/// The text of `docs/configuration.md`.
pub fn reference() -> String {
    let mut out = format!(
        "# Configuration

<!-- Generated from `SETTINGS` in crates/pushgate-server/src/config.rs:
edit it there, then run `{BLESS}`. -->

`pushgate serve` takes each setting from the first of:

1. its flag, e.g. `--history-ttl 2m`;
2. its environment variable, e.g. `PUSHGATE_HISTORY_TTL=2m`;
3. the TOML file named by `--config FILE` (or `PUSHGATE_CONFIG`), e.g.
   `ttl = \"2m\"` under `[history]`;
4. its default.

Durations are written `500ms`, `25s`, `10m`, `1h`, or as a number of
seconds. A switch's flag takes no value; in the file and the environment it
is `true` or `false`, `1` or `0`, `yes` or `no`, `on` or `off` (in any
case). A list is an array of strings in the file, comma-separated in the
environment, and its flag may be repeated. An address is `IP:PORT`
(`0.0.0.0:7070`, `[::1]:7070`), `localhost:PORT` (127.0.0.1), `:PORT`
(every interface, 0.0.0.0, as Go and Caddy read it) or a bare `PORT`
(127.0.0.1).

A setting's flag name is also a key of the file, with underscores for
dashes, in the setting's section or at the top level: `no_demo = true` is
`demo = false` under `[server]`, and `PUSHGATE_NO_DEMO=1` says the same in
the environment.

`pushgate config init` prints a commented file of every setting at its
default; `pushgate config check FILE` checks a file and prints the settings
it makes with the environment (secrets masked), each with where it came
from.

The file groups settings in sections:

```toml
{EXAMPLE}```

A key the file does not know, or a key in the wrong section, is an error
that names it. `pushgate serve --help` lists the flags with their defaults.
"
    );
    for section in sections() {
        // Writing to a String cannot fail.
        let _ = write!(
            out,
            "\n## [{section}]\n\n\
             | Key | Flag | Environment variable | Default | Meaning |\n\
             |---|---|---|---|---|\n"
        );
        for s in SETTINGS.iter().filter(|s| s.section == section) {
            let (flag, env) = if s.has(Mark::Inverted) {
                (
                    format!("`--{}` (turns it off)", s.flag),
                    format!("`{}` (`true` turns it off)", s.env),
                )
            } else {
                (format!("`--{}`", s.flag), format!("`{}`", s.env))
            };
            let default = match s.default_text() {
                d if d.is_empty() => "none".to_owned(),
                d => format!("`{d}`"),
            };
            let _ = writeln!(
                out,
                "| `{}` | {flag} | {env} | {default} | {} |",
                s.key,
                s.help.replace('|', "\\|")
            );
        }
    }
    out.push_str(
        "
## Channel rules: [channels], [personal], [namespaces.NAME]

Three more tables say who may subscribe to and publish on which channels
(details, defaults and an example in [security.md](security.md), section
\"Namespaces\"):
`[channels]` for channels in no namespace, `[personal]` for personal channels
`#user`, and `[namespaces.NAME]` for channels `NAME:…`. Their keys, all
optional: `subscribe` and `publish` (`anyone`, `users`, `claim` or
`nobody`), `presence` and `join_leave` (`true`/`false`), `history_size` and
`history_ttl`. With no token key, `[channels]` defaults to anyone/anyone;
with one, to claim/claim. A namespace inherits every key it does not set from
`[channels]`. These tables are read from the file only (no flags).

## Top-level names

Files written before sections named each setting at the top level, as the
field of `pushgate_server::Config` it sets; those names still work. A
setting may be given only once.

| Top-level name | Section and key |
|---|---|
",
    );
    for s in SETTINGS {
        let _ = writeln!(out, "| `{}` | `[{}]` `{}` |", s.field, s.section, s.key);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;

    #[test]
    fn example_is_a_valid_file() {
        let c = Config::from_toml(EXAMPLE).unwrap();
        assert!(c.ws_deflate && c.log_json);
        assert!(c.validate().is_ok());
    }

    /// `PUSHGATE_BLESS=1` rewrites the file instead of comparing.
    #[test]
    fn docs_configuration_md_is_current() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/configuration.md");
        let want = reference();
        if std::env::var_os("PUSHGATE_BLESS").is_some() {
            std::fs::write(&path, &want).unwrap();
            return;
        }
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        if let Some((n, (h, w))) = have
            .lines()
            .chain(std::iter::repeat(""))
            .zip(want.lines())
            .enumerate()
            .find(|(_, (h, w))| h != w)
        {
            panic!(
                "docs/configuration.md is out of date with config::SETTINGS \
                 (line {}: has {h:?}, should be {w:?}); regenerate it with\n    {BLESS}",
                n + 1
            );
        }
        assert_eq!(
            have.len(),
            want.len(),
            "docs/configuration.md has extra text; regenerate it with\n    {BLESS}"
        );
    }
}
