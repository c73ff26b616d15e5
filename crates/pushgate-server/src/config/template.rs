//! The files `pushgate config` prints, written from [`SETTINGS`] so that
//! they cannot drift from what the server reads: `init`'s commented file of
//! every setting at its default, and `check`'s effective settings.

use std::fmt::Write;

use super::{sections, Config, Kind, Mark, Setting, SETTINGS};

/// A TOML file of every setting, section by section, each with its help,
/// flag and variable, at its default; settings without one are commented
/// out. Read back, it is the default configuration.
pub fn template() -> String {
    let mut out = format!(
        "# pushgate {} configuration: every setting at its default.\n\
         # Written by `pushgate config init`; check a file with `pushgate config check FILE`.\n\
         # Each setting may also be given by its flag or environment variable (these win),\n\
         # and under its flag's name here (`no_demo = true`). Switches take true/false,\n\
         # 1/0, yes/no or on/off. Durations: 500ms, 25s, 10m, 1h or seconds.\n\
         # Channel rules ([channels], [personal], [namespaces.NAME]): docs/security.md.\n",
        env!("CARGO_PKG_VERSION")
    );
    for section in sections() {
        // Writing to a String cannot fail.
        let _ = write!(out, "\n[{section}]\n");
        for s in SETTINGS.iter().filter(|s| s.section == section) {
            out.push('\n');
            for line in wrap(s.help, 76) {
                let _ = writeln!(out, "# {line}");
            }
            let turns_off = if s.has(Mark::Inverted) {
                " (turns it off)"
            } else {
                ""
            };
            let _ = writeln!(out, "# flag --{}{turns_off}, variable {}", s.flag, s.env);
            match s.default_text() {
                d if d.is_empty() && s.kind != Kind::List => {
                    let _ = writeln!(out, "# {} = \"\"", s.key);
                }
                d => {
                    let _ = writeln!(out, "{} = {}", s.key, toml_value(s.kind, &d));
                }
            }
        }
    }
    out
}

/// The settings of `config` as a TOML file, each with where it came from
/// (`source_of`; none: the default) and secrets masked: what `pushgate
/// config check` prints.
pub fn effective(config: &Config, source_of: impl Fn(&Setting) -> Option<String>) -> String {
    let mut out = String::new();
    for section in sections() {
        if !out.is_empty() {
            out.push('\n');
        }
        let _ = writeln!(out, "[{section}]");
        for s in SETTINGS.iter().filter(|s| s.section == section) {
            let value = masked(s, (s.get)(config));
            let source = source_of(s).unwrap_or_else(|| "default".to_owned());
            let line = if value.is_empty() && s.kind != Kind::List {
                format!("# {} unset", s.key)
            } else {
                format!("{} = {}", s.key, toml_value(s.kind, &value))
            };
            let _ = writeln!(out, "{line:<40} # {source}");
        }
    }
    out
}

/// A secret's value as `***`; a URL keeps all but its password.
fn masked(s: &Setting, value: String) -> String {
    if !s.has(Mark::Secret) || value.is_empty() {
        value
    } else if value.contains("://") {
        crate::redis_broker::without_password(&value)
    } else {
        "***".to_owned()
    }
}

/// A setting's text (as its getter shows it) written as a TOML value.
pub(super) fn toml_value(kind: Kind, text: &str) -> String {
    let string = |t: &str| toml::Value::String(t.to_owned()).to_string();
    match kind {
        Kind::Integer | Kind::Switch => text.to_owned(),
        Kind::Duration | Kind::Address | Kind::Text => string(text),
        Kind::List => {
            let items: Vec<String> = text
                .split(',')
                .filter(|i| !i.is_empty())
                .map(string)
                .collect();
            format!("[{}]", items.join(", "))
        }
    }
}

/// `text` in lines of at most `width` characters (longer words alone).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in text.split_whitespace() {
        let line = lines.last_mut().expect("never empty");
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            lines.push(word.to_owned());
        } else {
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(c: &Config) -> Vec<String> {
        SETTINGS.iter().map(|s| (s.get)(c)).collect()
    }

    #[test]
    fn the_template_reads_back_as_the_defaults() {
        let text = template();
        let (c, set) = Config::from_toml_with_sources(&text).unwrap();
        assert_eq!(shown(&c), shown(&Config::default()));
        // Every setting with a default is written, not commented out.
        for s in SETTINGS {
            let written = set.iter().any(|w| w.field == s.field);
            let has_default = !s.default_text().is_empty() || s.kind == Kind::List;
            assert_eq!(written, has_default, "{}", s.name());
            assert!(text.contains(&format!("--{}", s.flag)), "{}", s.flag);
            assert!(text.contains(s.env), "{}", s.env);
        }
        assert!(text.lines().all(|l| l.len() <= 100), "{text}");
    }

    #[test]
    fn the_template_with_its_comments_removed_is_the_same_file() {
        // An operator uncomments a line and edits its value: every
        // commented setting is a valid line of its section once filled in.
        let mut filled = String::new();
        for line in template().lines() {
            match line.strip_prefix("# ").filter(|l| l.ends_with(" = \"\"")) {
                Some(setting) => filled.push_str(&setting.replace("\"\"", "\"x\"")),
                None => filled.push_str(line),
            }
            filled.push('\n');
        }
        let e = Config::from_toml(&filled)
            .map(|_| ())
            .map_err(|e| e.to_string());
        // Filled with "x", the addresses are not valid, and say so; the
        // rest is read.
        let e = e.unwrap_err();
        assert!(e.contains("`tls.redirect`"), "{e}");
        let without = filled.replace("redirect = \"x\"", "");
        let c = Config::from_toml(&without).unwrap();
        assert_eq!(c.api_key.as_deref(), Some("x"));
        assert_eq!(c.broker_url.as_deref(), Some("x"));
    }

    #[test]
    fn effective_settings_mask_secrets_and_name_sources() {
        let c = Config {
            api_key: Some("k3y".into()),
            auth_secret: Some("s3cret".into()),
            broker_url: Some("redis://me:pw@h:6379".into()),
            history_size: 5,
            ..Config::default()
        };
        let text = effective(&c, |s| {
            (s.field == "history_size").then(|| "file".to_owned())
        });
        assert!(!text.contains("k3y") && !text.contains("s3cret") && !text.contains("pw@"));
        assert!(text.contains("api_key = \"***\""), "{text}");
        assert!(text.contains("url = \"redis://me:***@h:6379\""), "{text}");
        let size = text.lines().find(|l| l.starts_with("size = 5")).unwrap();
        assert!(size.ends_with("# file"), "{size}");
        assert!(text.contains("# cert unset"), "{text}");
        let ttl = text
            .lines()
            .find(|l| l.starts_with("ttl = \"10m\""))
            .unwrap();
        assert!(ttl.ends_with("# default"), "{ttl}");
    }
}
