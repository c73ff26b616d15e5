//! What a setting is, and how one is read from text or from the TOML file.

use std::net::SocketAddr;
use std::time::Duration;

use toml::Value as Toml;

use super::{parse_duration, Config, SETTINGS};

/// One setting of [`Config`], declared once in [`SETTINGS`]: where it sits in
/// the TOML file, its flag and environment variable, its help, and how to
/// read and show its value.
pub struct Setting {
    /// TOML table it belongs to, e.g. `websocket`.
    pub section: &'static str,
    /// Key inside the section, e.g. `ping_interval`.
    pub key: &'static str,
    /// The [`Config`] field; also accepted as a top-level key, as files were
    /// written before sections.
    pub field: &'static str,
    /// Long flag of `pushgate serve`, without the dashes.
    pub flag: &'static str,
    /// Environment variable, read when the flag is absent.
    pub env: &'static str,
    /// One line for `--help` and the reference, without a trailing period.
    pub help: &'static str,
    pub kind: Kind,
    pub marks: &'static [Mark],
    /// Parses text written by people (a flag, a variable, the file) into the field.
    pub set: fn(&mut Config, &str) -> Result<(), String>,
    /// The field as text that `set` reads back.
    pub get: fn(&Config) -> String,
}

/// The shape of a setting's value, which decides how it is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `500ms`, `25s`, `10m`, `1h`, or a number of seconds.
    Duration,
    /// A whole number.
    Integer,
    /// On or off; its flag takes no value.
    Switch,
    /// `host:port`.
    Address,
    Text,
    /// A TOML array; comma-separated in the environment; a repeated flag.
    List,
}

/// What sets a setting apart from the usual.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// Its value is never shown: `--help` hides the variable's value.
    Secret,
    /// A switch that is on by default and whose flag turns it off (`--no-demo`).
    Inverted,
}

impl Setting {
    /// `section.key`, the full TOML name (a dotted key a file may also use).
    pub fn name(&self) -> String {
        format!("{}.{}", self.section, self.key)
    }

    pub fn has(&self, mark: Mark) -> bool {
        self.marks.contains(&mark)
    }

    /// The default value as text; empty when there is none.
    pub fn default_text(&self) -> String {
        (self.get)(&Config::default())
    }

    /// What a switch's flag sets it to.
    pub fn flag_value(&self) -> &'static str {
        if self.has(Mark::Inverted) {
            "false"
        } else {
            "true"
        }
    }

    /// The flag's name as a TOML key (`no-demo` → `no_demo`), which a file
    /// may use in the setting's section or at the top level: one name for
    /// a setting across flag, file and environment.
    pub fn flag_key(&self) -> String {
        self.flag.replace('-', "_")
    }
}

/// Reads a switch: `true/false`, `1/0`, `yes/no`, `on/off`, in any case, as
/// people write them in files, variables and unit files.
pub fn parse_bool(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(format!(
            "{text:?} is not a switch: write true or false (or 1/0, yes/no, on/off)"
        )),
    }
}

/// Reads an address to listen on. Besides `IP:PORT` (`0.0.0.0:7070`,
/// `[::1]:7070`): `localhost:PORT` (127.0.0.1), `:PORT` (every interface,
/// 0.0.0.0, as Go and Caddy read it) and a bare `PORT` (127.0.0.1: a bare
/// port should not open the server to the network).
pub fn parse_address(text: &str) -> Result<SocketAddr, String> {
    let text = text.trim();
    let port = |p: &str| p.parse::<u16>().ok();
    let parsed = if let Some(p) = text.strip_prefix("localhost:") {
        port(p).map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
    } else if let Some(p) = text.strip_prefix(':') {
        port(p).map(|p| SocketAddr::from(([0, 0, 0, 0], p)))
    } else if let Some(p) = port(text) {
        Some(SocketAddr::from(([127, 0, 0, 1], p)))
    } else {
        text.parse().ok()
    };
    parsed.ok_or_else(|| {
        format!(
            "{text:?} is not an address: write 127.0.0.1:7070, localhost:7070, \
             :7070 (every interface), 7070 (127.0.0.1:7070), [::1]:7070 or 0.0.0.0:7070"
        )
    })
}

/// The section names, in the order of [`SETTINGS`].
pub fn sections() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for s in SETTINGS {
        if !out.contains(&s.section) {
            out.push(s.section);
        }
    }
    out
}

/// A field type a setting may have.
pub(crate) trait Value: Sized {
    const KIND: Kind;
    fn parse(text: &str) -> Result<Self, String>;
    fn show(&self) -> String;
}

/// The kind of the field `field` points at, so that the table need not say it.
pub(crate) const fn kind_of<T: Value>(_field: fn(&Config) -> &T) -> Kind {
    T::KIND
}

impl Value for Duration {
    const KIND: Kind = Kind::Duration;
    fn parse(text: &str) -> Result<Self, String> {
        parse_duration(text)
    }
    /// The largest unit that shows it exactly, so that `600s` reads `10m`.
    fn show(&self) -> String {
        let ms = self.as_millis();
        if !ms.is_multiple_of(1000) {
            format!("{ms}ms")
        } else if ms > 0 && ms.is_multiple_of(3_600_000) {
            format!("{}h", ms / 3_600_000)
        } else if ms > 0 && ms.is_multiple_of(60_000) {
            format!("{}m", ms / 60_000)
        } else {
            format!("{}s", ms / 1000)
        }
    }
}

macro_rules! integer {
    ($($t:ty),*) => {$(
        impl Value for $t {
            const KIND: Kind = Kind::Integer;
            fn parse(text: &str) -> Result<Self, String> {
                text.parse().map_err(|e: std::num::ParseIntError| match e.kind() {
                    std::num::IntErrorKind::PosOverflow => {
                        format!("{text:?} is too large (at most {})", <$t>::MAX)
                    }
                    _ => format!("{text:?} is not a whole number"),
                })
            }
            fn show(&self) -> String {
                self.to_string()
            }
        }
    )*};
}
integer!(u8, u32, usize);

impl Value for bool {
    const KIND: Kind = Kind::Switch;
    fn parse(text: &str) -> Result<Self, String> {
        parse_bool(text)
    }
    fn show(&self) -> String {
        self.to_string()
    }
}

impl Value for SocketAddr {
    const KIND: Kind = Kind::Address;
    fn parse(text: &str) -> Result<Self, String> {
        parse_address(text)
    }
    fn show(&self) -> String {
        self.to_string()
    }
}

/// Empty means none.
impl Value for Option<SocketAddr> {
    const KIND: Kind = Kind::Address;
    fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Ok(None);
        }
        SocketAddr::parse(text).map(Some)
    }
    fn show(&self) -> String {
        self.map(|a| a.to_string()).unwrap_or_default()
    }
}

impl Value for crate::store::Sync {
    const KIND: Kind = Kind::Text;
    fn parse(text: &str) -> Result<Self, String> {
        match text {
            "always" => Ok(crate::store::Sync::Always),
            "interval" => Ok(crate::store::Sync::Interval),
            "never" => Ok(crate::store::Sync::Never),
            _ => Err(format!("{text:?} is not always, interval or never")),
        }
    }
    fn show(&self) -> String {
        self.name().to_owned()
    }
}

impl Value for String {
    const KIND: Kind = Kind::Text;
    fn parse(text: &str) -> Result<Self, String> {
        Ok(text.to_owned())
    }
    fn show(&self) -> String {
        self.clone()
    }
}

/// Empty means none: an empty API key would let anyone in.
impl Value for Option<String> {
    const KIND: Kind = Kind::Text;
    fn parse(text: &str) -> Result<Self, String> {
        Ok(Some(text.to_owned()).filter(|t| !t.is_empty()))
    }
    fn show(&self) -> String {
        self.clone().unwrap_or_default()
    }
}

impl Value for Vec<String> {
    const KIND: Kind = Kind::List;
    fn parse(text: &str) -> Result<Self, String> {
        Ok(text
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(str::to_owned)
            .collect())
    }
    fn show(&self) -> String {
        self.join(",")
    }
}

/// Applies a parsed TOML file: `[section]` tables of keys, or the flat
/// top-level names files used before sections; in both places a setting
/// may also be named by its flag ([`Setting::flag_key`]). Returns the
/// settings the file set.
pub(super) fn apply_toml(
    config: &mut Config,
    file: toml::Table,
) -> Result<Vec<&'static Setting>, String> {
    let sections = sections();
    let mut done = Vec::new();
    for (name, value) in file {
        let is_section = sections.contains(&name.as_str());
        match value {
            Toml::Table(table) if is_section => {
                for (key, value) in table {
                    let written = format!("{name}.{key}");
                    let (s, by_flag) = find(
                        |s| s.section == name && s.key == key,
                        |s| s.section == name && s.flag_key() == key,
                    )
                    .ok_or_else(|| unknown_key(&written, Some(&name), &key))?;
                    apply(config, s, by_flag, written, value, &mut done)?;
                }
            }
            value => match find(|s| s.field == name, |s| s.flag_key() == name) {
                Some((s, by_flag)) => apply(config, s, by_flag, name, value, &mut done)?,
                None if is_section => {
                    return Err(format!(
                        "`{name}` is a section: write [{name}] and its keys below it"
                    ))
                }
                None if value.is_table() => {
                    let hint = closest(&name, sections.iter().copied())
                        .map(|s| format!("; did you mean [{s}]?"))
                        .unwrap_or_default();
                    return Err(format!("unknown section [{name}]{hint}"));
                }
                None => return Err(unknown_key(&name, None, &name)),
            },
        }
    }
    Ok(done.into_iter().map(|(s, _)| s).collect())
}

/// The setting its own name picks, else the one its flag's name picks
/// (`true` then).
fn find(
    own: impl Fn(&Setting) -> bool,
    by_flag: impl Fn(&Setting) -> bool,
) -> Option<(&'static Setting, bool)> {
    SETTINGS
        .iter()
        .find(|s| own(s))
        .map(|s| (s, false))
        .or_else(|| SETTINGS.iter().find(|s| by_flag(s)).map(|s| (s, true)))
}

/// Sets `s` from the file, where it was written `written` (by its flag's
/// name when `by_flag`: an inverted switch's flag turns it off, so `no_demo
/// = true` is `demo = false`); `done` holds the settings set so far, so that
/// one given twice (under two names) is an error rather than a silent choice.
fn apply(
    config: &mut Config,
    s: &'static Setting,
    by_flag: bool,
    written: String,
    value: Toml,
    done: &mut Vec<(&'static Setting, String)>,
) -> Result<(), String> {
    if let Some((_, before)) = done.iter().find(|(d, _)| d.field == s.field) {
        return Err(format!(
            "`{before}` and `{written}` are the same setting; keep one"
        ));
    }
    let mut text = toml_text(s.kind, value)
        .ok_or_else(|| format!("`{written}` must be {}", describe(s.kind)))?;
    if by_flag && s.has(Mark::Inverted) {
        let on = parse_bool(&text).map_err(|e| format!("`{written}`: {e}"))?;
        text = (!on).to_string();
    }
    (s.set)(config, &text).map_err(|e| format!("`{written}`: {e}"))?;
    done.push((s, written));
    Ok(())
}

/// A TOML value as the text a setter reads, if it has the right type.
fn toml_text(kind: Kind, value: Toml) -> Option<String> {
    match (kind, value) {
        (Kind::Duration | Kind::Integer, Toml::Integer(n)) => Some(n.to_string()),
        (Kind::Duration | Kind::Address | Kind::Text, Toml::String(s)) => Some(s),
        (Kind::Switch, Toml::Boolean(b)) => Some(b.to_string()),
        // `"yes"`, `1`: read by the switch's parser, which says what it takes.
        (Kind::Switch, Toml::String(s)) => Some(s),
        (Kind::Switch, Toml::Integer(n)) => Some(n.to_string()),
        (Kind::List, Toml::Array(items)) => items
            .into_iter()
            .map(|item| match item {
                Toml::String(s) => Some(s),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()
            .map(|items| items.join(",")),
        _ => None,
    }
}

fn describe(kind: Kind) -> &'static str {
    match kind {
        Kind::Duration => "a duration such as \"25s\", or a number of seconds",
        Kind::Integer => "a whole number",
        Kind::Switch => "true or false (or 1/0, \"yes\"/\"no\", \"on\"/\"off\")",
        Kind::Address => "an address such as \"127.0.0.1:7070\"",
        Kind::Text => "a string",
        Kind::List => "a list of strings, such as [\"a\", \"b\"]",
    }
}

/// "unknown key", with the setting the author most likely meant: the same
/// name in another place (a flat name under a section, a key in the wrong
/// section) or a near spelling, preferring the section it was written in.
fn unknown_key(written: &str, section: Option<&str>, key: &str) -> String {
    let best = SETTINGS
        .iter()
        .flat_map(|s| {
            let elsewhere = usize::from(section != Some(s.section));
            [s.field.to_owned(), s.key.to_owned(), s.flag_key()]
                .map(|name| (2 * distance(key, &name) + elsewhere, s))
        })
        .min_by_key(|(score, _)| *score)
        .filter(|(score, _)| score / 2 <= key.len().div_ceil(3));
    match best {
        Some((_, s)) => format!(
            "unknown key `{written}`; did you mean `{}` in [{}]? (see docs/configuration.md)",
            s.key, s.section
        ),
        None => format!("unknown key `{written}` (see docs/configuration.md)"),
    }
}

fn closest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .map(|c| (distance(name, c), c))
        .min_by_key(|(d, _)| *d)
        .filter(|(d, _)| *d <= name.len().div_ceil(3))
        .map(|(_, c)| c)
}

/// Levenshtein distance, for suggestions.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

/// Declares [`SETTINGS`](super::SETTINGS), section by section: each setting's
/// doc comment is its help, then `key: Config field, "flag", "ENV"` and any
/// [`Mark`]s. Also checks at compile time that every field is declared.
macro_rules! settings {
    ($(
        [$section:ident]
        $( $(#[doc = $doc:literal])+
           $key:ident: $field:ident, $flag:literal, $env:literal $(, $mark:ident)*; )*
    )*) => {
        /// Every setting of [`Config`], in the order `--help` and the reference show them.
        pub static SETTINGS: &[Setting] = &[$($(
            Setting {
                section: stringify!($section),
                key: stringify!($key),
                field: stringify!($field),
                flag: $flag,
                env: $env,
                help: concat!($($doc),+).trim_ascii_start(),
                kind: setting::kind_of(|c| &c.$field),
                marks: &[$(Mark::$mark),*],
                set: |c, text| {
                    c.$field = setting::Value::parse(text)?;
                    Ok(())
                },
                get: |c| setting::Value::show(&c.$field),
            },
        )*)*];

        // Fails to compile when a field of `Config` is not declared above
        // (but `namespaces`: tables of their own, not one value).
        #[allow(dead_code)]
        fn every_field_is_a_setting(c: Config) {
            let Config { namespaces: _, namespace_tables: _, $($($field: _,)*)* } = c;
        }
    };
}
pub(crate) use settings;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_show_in_their_largest_exact_unit() {
        let show = |d: Duration| Value::show(&d);
        assert_eq!(show(Duration::from_millis(10)), "10ms");
        assert_eq!(show(Duration::from_millis(1500)), "1500ms");
        assert_eq!(show(Duration::from_secs(25)), "25s");
        assert_eq!(show(Duration::from_secs(600)), "10m");
        assert_eq!(show(Duration::from_secs(7200)), "2h");
        assert_eq!(show(Duration::ZERO), "0s");
    }

    #[test]
    fn edit_distance() {
        assert_eq!(distance("histroy_size", "history_size"), 2);
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(distance("same", "same"), 0);
    }
}
