//! The channel rules of the config file: `[channels]` (channels in no
//! namespace), `[personal]` (personal channels `#user`) and
//! `[namespaces.NAME]` (channels `NAME:…`). See docs/security.md.
//!
//! The file is read before the environment and the flags, and the default
//! rules depend on whether a token key is configured (from any source), so
//! the tables are kept as written ([`NamespaceTables`]) and resolved into
//! [`Namespaces`] once the whole configuration is known.

use std::time::Duration;

use pushgate_core::namespace::{Access, Namespace, Namespaces, Rules, ROOM_NAMESPACE};

/// Rules as written: every key optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WrittenRules {
    subscribe: Option<Access>,
    publish: Option<Access>,
    presence: Option<bool>,
    join_leave: Option<bool>,
    signal: Option<bool>,
    history_size: Option<usize>,
    history_ttl: Option<Duration>,
}

impl WrittenRules {
    /// These rules, with every unset key taken from `base`. A room
    /// (`signal`) has presence and join/leave unless they are written.
    fn over(&self, base: &Rules) -> Rules {
        let signal = self.signal.unwrap_or(base.signal);
        Rules {
            subscribe: self.subscribe.unwrap_or(base.subscribe),
            publish: self.publish.unwrap_or(base.publish),
            presence: self.presence.unwrap_or(base.presence || signal),
            join_leave: self.join_leave.unwrap_or(base.join_leave || signal),
            signal,
            history_size: self.history_size.or(base.history_size),
            history_ttl: self.history_ttl.or(base.history_ttl),
        }
    }
}

/// The `[channels]`, `[personal]` and `[namespaces.*]` tables of a file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamespaceTables {
    channels: WrittenRules,
    personal: WrittenRules,
    namespaces: Vec<(String, WrittenRules)>,
}

impl NamespaceTables {
    /// Takes the three tables out of `file`, leaving the settings.
    pub(super) fn take(file: &mut toml::Table) -> Result<Self, String> {
        let mut tables = NamespaceTables::default();
        if let Some(v) = file.remove("channels") {
            tables.channels = rules("channels", v)?;
        }
        if let Some(v) = file.remove("personal") {
            tables.personal = rules("personal", v)?;
        }
        if let Some(v) = file.remove("namespaces") {
            let toml::Value::Table(list) = v else {
                return Err("`namespaces` must be tables: write [namespaces.NAME]".into());
            };
            for (name, v) in list {
                let written = format!("namespaces.{name}");
                let r = rules(&written, v)?;
                // Checks the name now, so the error points at the file.
                Namespace::new(&name, Rules::open())
                    .map_err(|e| format!("[{written}]: {}", e.message()))?;
                tables.namespaces.push((name, r));
            }
        }
        Ok(tables)
    }

    /// The namespaces these tables make. `checks_tokens`: whether a key is
    /// configured, which sets the defaults (anyone/anyone without, the
    /// token's claims with).
    pub fn resolve(&self, checks_tokens: bool) -> Namespaces {
        let base = if checks_tokens {
            Rules::closed()
        } else {
            Rules::open()
        };
        let default = self.channels.over(&base);
        let personal = self.personal.over(&Rules {
            publish: Access::Claim,
            ..Rules::open()
        });
        // `[namespaces.room]` changes the built-in rooms: it is written
        // over a room's rules, not over a plain channel's.
        let list = self
            .namespaces
            .iter()
            .filter_map(|(name, r)| {
                let base = if name == ROOM_NAMESPACE {
                    Rules::room(&default)
                } else {
                    default.clone()
                };
                Namespace::new(name, r.over(&base)).ok()
            })
            .collect();
        Namespaces::new(default, personal, list)
    }
}

const KEYS: [&str; 7] = [
    "subscribe",
    "publish",
    "presence",
    "join_leave",
    "signal",
    "history_size",
    "history_ttl",
];

/// One table of rules, `[written]` in the file.
fn rules(written: &str, value: toml::Value) -> Result<WrittenRules, String> {
    let toml::Value::Table(table) = value else {
        return Err(format!(
            "`{written}` is a table: write [{written}] and its keys below it"
        ));
    };
    let mut r = WrittenRules::default();
    for (key, v) in table {
        let at = format!("{written}.{key}");
        let access = |v: &toml::Value| {
            v.as_str()
                .ok_or_else(|| format!("`{at}` must be anyone, users, claim or nobody"))
                .and_then(|s| Access::parse(s).map_err(|e| format!("`{at}`: {}", e.message())))
        };
        let flag = |v: &toml::Value| {
            v.as_bool()
                .ok_or_else(|| format!("`{at}` must be true or false"))
        };
        match key.as_str() {
            "subscribe" => r.subscribe = Some(access(&v)?),
            "publish" => r.publish = Some(access(&v)?),
            "presence" => r.presence = Some(flag(&v)?),
            "join_leave" => r.join_leave = Some(flag(&v)?),
            "signal" => r.signal = Some(flag(&v)?),
            "history_size" => {
                let n = v
                    .as_integer()
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| format!("`{at}` must be a whole number"))?;
                r.history_size = Some(n);
            }
            "history_ttl" => {
                let d = match &v {
                    toml::Value::String(s) => super::parse_duration(s),
                    toml::Value::Integer(n) if *n >= 0 => Ok(Duration::from_secs(*n as u64)),
                    _ => Err("must be a duration such as \"10m\"".to_string()),
                }
                .map_err(|e| format!("`{at}`: {e}"))?;
                r.history_ttl = Some(d);
            }
            _ => {
                return Err(format!(
                    "unknown key `{at}` (the keys of [{written}] are {}; see docs/security.md)",
                    KEYS.join(", ")
                ))
            }
        }
    }
    if r.signal == Some(true) && (r.presence == Some(false) || r.join_leave == Some(false)) {
        return Err(format!(
            "[{written}]: signal = true makes a room, whose members must see each other: \
             it needs presence and join_leave (leave them out, or set them true)"
        ));
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pushgate_core::ChannelName;

    fn tables(text: &str) -> Result<NamespaceTables, String> {
        let mut file: toml::Table = text.parse().unwrap();
        NamespaceTables::take(&mut file)
    }

    fn rules_of(ns: &Namespaces, channel: &str) -> Rules {
        ns.rules(&ChannelName::new(channel).unwrap()).clone()
    }

    #[test]
    fn no_tables_are_the_defaults() {
        let t = tables("listen = \"127.0.0.1:1\"").unwrap();
        assert_eq!(t, NamespaceTables::default());
        assert_eq!(rules_of(&t.resolve(false), "x").subscribe, Access::Anyone);
        assert_eq!(rules_of(&t.resolve(true), "x").subscribe, Access::Claim);
    }

    #[test]
    fn defaults_depend_on_whether_tokens_are_checked() {
        let t = tables("[channels]\npresence = true").unwrap();
        let open = t.resolve(false);
        assert_eq!(rules_of(&open, "news").subscribe, Access::Anyone);
        assert_eq!(rules_of(&open, "news").publish, Access::Anyone);
        assert!(rules_of(&open, "news").presence);
        let closed = t.resolve(true);
        assert_eq!(rules_of(&closed, "news").subscribe, Access::Claim);
        assert_eq!(rules_of(&closed, "news").publish, Access::Claim);
        assert_eq!(closed.personal().publish, Access::Claim);
    }

    #[test]
    fn a_namespace_inherits_what_it_does_not_set_from_channels() {
        let t = tables(
            r#"
            [channels]
            subscribe = "users"
            history_size = 7
            history_ttl = "10m"
            [personal]
            publish = "users"
            history_ttl = "1h"
            [namespaces.chat]
            publish = "nobody"
            presence = true
            join_leave = true
            "#,
        )
        .unwrap();
        let ns = t.resolve(true);
        let chat = rules_of(&ns, "chat:room");
        assert_eq!(chat.subscribe, Access::Users, "inherited");
        assert_eq!(chat.publish, Access::Nobody);
        assert!(chat.presence && chat.join_leave);
        assert_eq!(chat.history_size, Some(7));
        assert_eq!(chat.history_ttl, Some(Duration::from_secs(600)));
        assert_eq!(rules_of(&ns, "news").publish, Access::Claim, "default");
        assert_eq!(ns.personal().publish, Access::Users);
        assert_eq!(ns.personal().history_ttl, Some(Duration::from_secs(3600)));
    }

    #[test]
    fn rooms_are_built_in_and_any_namespace_can_be_one() {
        let t = tables("").unwrap();
        let room = rules_of(&t.resolve(true), "room:a");
        assert!(room.signal && room.presence && room.join_leave);
        assert_eq!(room.subscribe, Access::Claim, "the default access");
        let t = tables(
            r#"
            [namespaces.room]
            subscribe = "users"
            [namespaces.call]
            signal = true
            history_size = 0
            [namespaces.off]
            signal = false
            "#,
        )
        .unwrap();
        let ns = t.resolve(false);
        let room = rules_of(&ns, "room:a");
        assert!(room.signal && room.join_leave, "still a room");
        assert_eq!(room.subscribe, Access::Users);
        let call = rules_of(&ns, "call:a");
        assert!(call.signal && call.presence && call.join_leave);
        assert_eq!(call.history_size, Some(0));
        assert!(!rules_of(&ns, "off:a").presence);
        let t = tables("[namespaces.room]\nsignal = false").unwrap();
        assert!(
            !rules_of(&t.resolve(false), "room:a").signal,
            "rooms turned off"
        );
        let e = tables("[namespaces.call]\nsignal = true\npresence = false").unwrap_err();
        assert!(e.contains("[namespaces.call]: signal = true"), "{e}");
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let e = tables("[namespaces.chat]\npresense = true").unwrap_err();
        assert!(e.contains("`namespaces.chat.presense`"), "{e}");
        let e = tables("[channels]\nsubscribe = \"everyone\"").unwrap_err();
        assert!(e.contains("`channels.subscribe`"), "{e}");
        let e = tables("[personal]\nhistory_size = -1").unwrap_err();
        assert!(e.contains("`personal.history_size`"), "{e}");
        let e = tables("namespaces = 3").unwrap_err();
        assert!(e.contains("[namespaces.NAME]"), "{e}");
    }
}
