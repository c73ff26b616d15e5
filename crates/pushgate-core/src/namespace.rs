//! Namespaces: channel-name prefixes with rules of their own (who may
//! subscribe and publish, presence, join/leave messages, history), and the
//! default rules of every other channel.
//!
//! A namespace `chat` holds the channels whose names begin `chat:`; the
//! longest matching prefix wins (`chat:room:` before `chat:`). Personal
//! channels, `#` and a user id, are their own namespace: only their user
//! subscribes, and only direct messages (`send`) and the API publish there.

use std::time::Duration;

use crate::channel::ChannelName;
use crate::error::{Error, ErrorKind};

/// What begins a user's personal channel (`#alice`).
pub const PERSONAL_PREFIX: &str = "#";

/// The namespace every server has unless configured otherwise: `room:NAME`
/// channels are WebRTC rooms (presence, join/leave, signals), with the
/// access rules of channels in no namespace.
pub const ROOM_NAMESPACE: &str = "room";

/// Who may do something on a channel, beyond what a token's claims grant
/// (a matching claim always grants).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, with or without a token.
    Anyone,
    /// Any client with a valid token.
    Users,
    /// Only a token whose claim grants it (`channels`, `publish`, `send`).
    Claim,
    /// No client (the API still may).
    Nobody,
}

impl Access {
    /// Reads `anyone`, `users`, `claim` or `nobody`.
    pub fn parse(text: &str) -> Result<Self, Error> {
        match text {
            "anyone" => Ok(Access::Anyone),
            "users" => Ok(Access::Users),
            "claim" => Ok(Access::Claim),
            "nobody" => Ok(Access::Nobody),
            other => Err(Error::new(
                ErrorKind::BadRequest,
                format!("{other:?} is not an access rule (use anyone, users, claim or nobody)"),
            )),
        }
    }

    /// The name [`Access::parse`] reads.
    pub fn name(self) -> &'static str {
        match self {
            Access::Anyone => "anyone",
            Access::Users => "users",
            Access::Claim => "claim",
            Access::Nobody => "nobody",
        }
    }
}

/// The rules of a namespace's channels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// Who may subscribe.
    pub subscribe: Access,
    /// Who may publish as a client (the API always may). For personal
    /// channels: who may send direct messages.
    pub publish: Access,
    /// Whether the server keeps who is subscribed (the `presence` command,
    /// `/api/presence`).
    pub presence: bool,
    /// Whether subscribers are told when a user joins or leaves (needs
    /// `presence`).
    pub join_leave: bool,
    /// Whether its channels are rooms: members relay WebRTC `signal`s to
    /// each other (needs `presence` and `join_leave`).
    pub signal: bool,
    /// Messages kept per channel; `None`: the server's `history.size`.
    pub history_size: Option<usize>,
    /// How long a message is kept; `None`: the server's `history.ttl`.
    pub history_ttl: Option<Duration>,
}

impl Rules {
    /// Everything open, as pushgate is with no auth configured.
    pub fn open() -> Self {
        Rules {
            subscribe: Access::Anyone,
            publish: Access::Anyone,
            presence: false,
            join_leave: false,
            signal: false,
            history_size: None,
            history_ttl: None,
        }
    }

    /// `base`'s access and history, as a room: presence, join/leave and
    /// signals on.
    pub fn room(base: &Rules) -> Self {
        Rules {
            presence: true,
            join_leave: true,
            signal: true,
            ..base.clone()
        }
    }

    /// The default of a server that checks tokens: a channel needs a
    /// token's grant.
    pub fn closed() -> Self {
        Rules {
            subscribe: Access::Claim,
            publish: Access::Claim,
            ..Rules::open()
        }
    }
}

impl Default for Rules {
    fn default() -> Self {
        Rules::open()
    }
}

/// One namespace: a name, the prefix it covers (`name:`) and its rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    /// Its name in the configuration, e.g. `chat`.
    pub name: String,
    /// The channel-name prefix it covers, e.g. `chat:`.
    pub prefix: String,
    /// Its rules.
    pub rules: Rules,
}

impl Namespace {
    /// Namespace `name` (covering `name:`): letters, digits, `_`, `-`, `.`.
    pub fn new(name: &str, rules: Rules) -> Result<Self, Error> {
        let ok = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
        if !ok {
            return Err(Error::new(
                ErrorKind::BadRequest,
                format!("namespace name {name:?} must be 1 to 64 letters, digits, _ - or ."),
            ));
        }
        Ok(Namespace {
            name: name.to_owned(),
            prefix: format!("{name}:"),
            rules,
        })
    }
}

/// Every namespace, the rules of channels in none, and those of personal
/// channels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespaces {
    default: Rules,
    personal: Rules,
    /// Longest prefix first, so the first match is the most specific.
    list: Vec<Namespace>,
}

impl Default for Namespaces {
    fn default() -> Self {
        Namespaces::new(Rules::open(), Rules::open(), Vec::new())
    }
}

impl Namespaces {
    /// `default` rules channels in no namespace; `personal` rules personal
    /// channels (its `publish` says who may send direct messages; its
    /// `subscribe` is ignored: only the owner subscribes). Unless `list`
    /// has a namespace [`ROOM_NAMESPACE`], one is added with
    /// [`Rules::room`] of `default`.
    pub fn new(default: Rules, personal: Rules, mut list: Vec<Namespace>) -> Self {
        if !list.iter().any(|n| n.name == ROOM_NAMESPACE) {
            let rooms = Namespace::new(ROOM_NAMESPACE, Rules::room(&default))
                .expect("a valid namespace name");
            list.push(rooms);
        }
        list.sort_by_key(|n| std::cmp::Reverse(n.prefix.len()));
        Namespaces {
            default,
            personal,
            list,
        }
    }

    /// The namespace of `channel`, if any.
    pub fn find(&self, channel: &str) -> Option<&Namespace> {
        self.list.iter().find(|n| channel.starts_with(&n.prefix))
    }

    /// The rules of `channel`.
    pub fn rules(&self, channel: &ChannelName) -> &Rules {
        if channel.as_str().starts_with(PERSONAL_PREFIX) {
            return &self.personal;
        }
        self.find(channel.as_str())
            .map_or(&self.default, |n| &n.rules)
    }

    /// The rules of channels in no namespace.
    pub fn default_rules(&self) -> &Rules {
        &self.default
    }

    /// The rules of personal channels.
    pub fn personal(&self) -> &Rules {
        &self.personal
    }

    /// Every namespace, longest prefix first.
    pub fn iter(&self) -> impl Iterator<Item = &Namespace> {
        self.list.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ch(name: &str) -> ChannelName {
        ChannelName::new(name).unwrap()
    }

    #[test]
    fn the_longest_prefix_decides() {
        let chat = Rules {
            presence: true,
            ..Rules::open()
        };
        let rooms = Rules {
            subscribe: Access::Nobody,
            ..Rules::open()
        };
        let ns = Namespaces::new(
            Rules::closed(),
            Rules::open(),
            vec![
                Namespace::new("chat", chat.clone()).unwrap(),
                Namespace::new("chat.rooms", rooms.clone()).unwrap(),
            ],
        );
        assert_eq!(ns.rules(&ch("chat:lobby")), &chat);
        assert_eq!(ns.rules(&ch("chat.rooms:1")), &rooms);
        assert_eq!(
            ns.rules(&ch("chatty")),
            &Rules::closed(),
            "a prefix is name and colon"
        );
        assert_eq!(ns.rules(&ch("news")), &Rules::closed());
        assert_eq!(ns.rules(&ch("#alice")), &Rules::open());
        // Rooms are built in, with the default access, unless configured.
        let room = ns.rules(&ch("room:a"));
        assert!(room.signal && room.presence && room.join_leave);
        assert_eq!(room.subscribe, Access::Claim);
        let ns = Namespaces::new(
            Rules::open(),
            Rules::open(),
            vec![Namespace::new("room", rooms.clone()).unwrap()],
        );
        assert_eq!(ns.rules(&ch("room:a")), &rooms);
        assert!(Namespace::new("a:b", Rules::open()).is_err());
        assert!(Namespace::new("", Rules::open()).is_err());
    }

    #[test]
    fn access_names_round_trip() {
        for a in [Access::Anyone, Access::Users, Access::Claim, Access::Nobody] {
            assert_eq!(Access::parse(a.name()).unwrap(), a);
        }
        assert!(Access::parse("everyone").is_err());
    }
}
