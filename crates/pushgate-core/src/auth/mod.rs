//! Who may do what: tokens, users and their grants, and the [`Policy`] that
//! decides every subscribe, publish and direct message, for every transport
//! alike. Transports only hand the token in and the verdict out.
//!
//! A client proves who it is with a JWT ([`token::Verifier`]); its claims
//! become a [`User`]: an id (`sub`), the channel [`Patterns`] it may
//! subscribe to (`channels`) and publish to (`publish`), whether it may send
//! direct messages (`send`) and when the token expires (`exp`). Without a
//! token a client is [`Principal::Anonymous`]. What each may do on a channel
//! is the token's grant or, failing that, its namespace's rules
//! ([`crate::namespace`]).

pub mod token;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use crate::channel::ChannelName;
use crate::error::{Error, ErrorKind};
use crate::json;
use crate::namespace::{Access, Namespaces, Rules, PERSONAL_PREFIX};
use crate::principal::Principal;
use crate::rate::Rate;

pub use token::{AuthConfig, Claims, Verifier};

/// A channel pattern from a token: an exact name, or a prefix followed by
/// `*` (`chat:*` matches `chat:lobby` and `chat:`; `*` alone matches every
/// channel). A `*` anywhere but last is an ordinary character.
#[derive(Clone, PartialEq, Eq)]
pub struct Pattern(Arc<str>);

impl Pattern {
    /// A pattern; empty text or one longer than a channel name is refused.
    pub fn new(text: &str) -> Result<Self, Error> {
        if text.is_empty() || text.len() > crate::channel::MAX_CHANNEL_LEN {
            return Err(Error::new(
                ErrorKind::Unauthorized,
                format!(
                    "a channel pattern must be 1 to {} bytes",
                    crate::channel::MAX_CHANNEL_LEN
                ),
            ));
        }
        Ok(Pattern(Arc::from(text)))
    }

    /// Whether `channel` matches.
    pub fn matches(&self, channel: &str) -> bool {
        match self.0.strip_suffix('*') {
            Some(prefix) => channel.starts_with(prefix),
            None => channel == &*self.0,
        }
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

/// The patterns of one claim; none matches nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Patterns(Box<[Pattern]>);

impl Patterns {
    /// The patterns of `texts`, in order.
    pub fn new<S: AsRef<str>>(texts: impl IntoIterator<Item = S>) -> Result<Self, Error> {
        texts
            .into_iter()
            .map(|t| Pattern::new(t.as_ref()))
            .collect::<Result<Vec<_>, _>>()
            .map(|v| Patterns(v.into()))
    }

    /// Whether any pattern matches `channel`.
    pub fn matches(&self, channel: &str) -> bool {
        self.0.iter().any(|p| p.matches(channel))
    }

    /// The patterns, in order.
    pub fn iter(&self) -> impl Iterator<Item = &Pattern> {
        self.0.iter()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A user's id: a token's `sub`.
pub type UserId = Arc<str>;

/// A client that presented a valid token: who it is and what its token
/// grants, beyond what namespaces grant everyone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The token's `sub`.
    pub id: UserId,
    /// Channels it may subscribe to (`channels`).
    pub channels: Patterns,
    /// Channels it may publish to (`publish`).
    pub publish: Patterns,
    /// Whether it may send direct messages to other users (`send`).
    pub send: bool,
    /// When the token expires, in seconds since the Unix epoch (`exp`).
    pub expires: Option<u64>,
    /// When the token was issued (`iat`), for revocations ([`Policy::revoke`]).
    pub issued_at: Option<u64>,
    /// Whether the token says `"admin": true`: the server may then take it
    /// in place of its API key.
    pub admin: bool,
}

impl User {
    /// Its personal channel, `#` and its id, where direct messages to it
    /// go; `None` when the id has characters a channel name may not.
    pub fn personal_channel(&self) -> Option<ChannelName> {
        personal_channel(&self.id)
    }
}

/// The personal channel of user `id` (`#alice`).
pub fn personal_channel(id: &str) -> Option<ChannelName> {
    ChannelName::new(&format!("{PERSONAL_PREFIX}{id}")).ok()
}

/// The decisions: authenticating a token, and for each principal whether it
/// may subscribe, publish or send. One per server, shared by every
/// connection (through the [`crate::Hub`]).
#[derive(Debug, Default)]
pub struct Policy {
    verifier: Option<Verifier>,
    namespaces: Namespaces,
    /// Users disconnected by the application (see [`Policy::revoke`]).
    /// std's lock, not loom's: nothing here races with fan-out.
    revoked: Mutex<Revocations>,
    /// Tokens already verified, by their exact text.
    verified: Mutex<HashMap<Box<str>, Arc<User>>>,
    /// How fast each client may publish and send (`None`: no limit).
    publish_rate: Option<Rate>,
}

/// Most tokens remembered as verified. Every poll and long-poll request
/// presents its token again, and a reconnecting client the one it had: a
/// signature check costs 10 to 500 µs (HS256 to ES256; docs/benchmarks.md),
/// a lookup well under one. Bounded: when full, expired entries go, and if
/// none had, all of them.
pub const VERIFIED_TOKENS: usize = 10_000;

/// Most users remembered as disconnected at once; past it the oldest
/// entry is forgotten first.
pub const MAX_REVOCATIONS: usize = 100_000;

/// When each disconnected user was disconnected, and the longest token
/// lifetime seen, after which an entry can be forgotten: every token issued
/// before it has expired by then.
#[derive(Debug, Default)]
struct Revocations {
    users: HashMap<UserId, u64>,
    longest_lifetime: u64,
}

impl Revocations {
    fn forget_expired(&mut self, now: u64) {
        let longest = self.longest_lifetime;
        self.users.retain(|_, at| at.saturating_add(longest) >= now);
    }
}

impl Policy {
    /// No token checks, every channel open to anyone: pushgate with nothing
    /// configured.
    pub fn open() -> Self {
        Policy::default()
    }

    /// Tokens checked by `verifier` (none: tokens are refused and everyone
    /// is anonymous), channels ruled by `namespaces`.
    pub fn new(verifier: Option<Verifier>, namespaces: Namespaces) -> Self {
        Policy {
            verifier,
            namespaces,
            revoked: Mutex::default(),
            verified: Mutex::default(),
            publish_rate: None,
        }
    }

    /// The same policy, limiting each client's publishes and direct
    /// messages to `rate` (`None`: no limit, the default). The server API
    /// is never limited: it is the application, not a client.
    pub fn with_publish_rate(mut self, rate: Option<Rate>) -> Self {
        self.publish_rate = rate;
        self
    }

    /// How fast each client may publish and send, if it is limited.
    pub fn publish_rate(&self) -> Option<&Rate> {
        self.publish_rate.as_ref()
    }

    /// Whether tokens are checked at all.
    pub fn checks_tokens(&self) -> bool {
        self.verifier.is_some()
    }

    /// The namespaces.
    pub fn namespaces(&self) -> &Namespaces {
        &self.namespaces
    }

    /// The rules of `channel`'s namespace.
    pub fn rules(&self, channel: &ChannelName) -> &Rules {
        self.namespaces.rules(channel)
    }

    /// Who presents `token` at `now` (seconds since the Unix epoch): a
    /// [`Principal::User`], or [`Principal::Anonymous`] without a token.
    pub fn authenticate(&self, token: Option<&str>, now: u64) -> Result<Principal, Error> {
        let Some(token) = token else {
            return Ok(Principal::Anonymous);
        };
        match &self.verifier {
            Some(v) => {
                let user = self.verified(v, token, now)?;
                self.check_revoked(&user, now)?;
                Ok(Principal::User(user))
            }
            None => Err(Error::new(
                ErrorKind::Unauthorized,
                "this server checks no tokens (no auth key is configured): connect without one",
            )),
        }
    }

    /// The user of `token`: remembered when the same text was verified
    /// before and has not expired (the same bytes verify the same way),
    /// else verified now. Connections with one token share its user.
    fn verified(&self, v: &Verifier, token: &str, now: u64) -> Result<Arc<User>, Error> {
        let lock = || self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(user) = lock().get(token) {
            if v.alive(user.expires, now) {
                return Ok(user.clone());
            }
        }
        let user = Arc::new(v.verify(token, now)?);
        let mut cache = lock();
        if cache.len() >= VERIFIED_TOKENS {
            cache.retain(|_, u| v.alive(u.expires, now));
            if cache.len() >= VERIFIED_TOKENS {
                cache.clear();
            }
        }
        cache.insert(token.into(), user.clone());
        Ok(user)
    }

    /// Refuses `user`'s tokens issued at or before `at` (seconds since the
    /// Unix epoch; a token without `iat` counts as issued before), from now
    /// on: the application disconnected it. The entry is forgotten once
    /// the longest token lifetime seen (`exp` − `iat`, or − the time the
    /// token was first seen without `iat`) has passed since `at`: every such
    /// token has expired by then. Tokens without `exp` make that never, and
    /// then at most [`MAX_REVOCATIONS`] users are remembered, oldest
    /// forgotten first.
    pub fn revoke(&self, user: &UserId, at: u64) {
        let mut r = self.revoked.lock().unwrap_or_else(|e| e.into_inner());
        r.forget_expired(at);
        if r.users.len() >= MAX_REVOCATIONS && !r.users.contains_key(user) {
            if let Some(oldest) = r
                .users
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(u, _)| u.clone())
            {
                r.users.remove(&oldest);
            }
        }
        r.users.insert(user.clone(), at);
    }

    /// How many users are remembered as disconnected (for tests).
    pub fn revoked_count(&self) -> usize {
        self.revoked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .users
            .len()
    }

    fn check_revoked(&self, user: &User, now: u64) -> Result<(), Error> {
        let mut r = self.revoked.lock().unwrap_or_else(|e| e.into_inner());
        let lifetime = user.expires.map_or(u64::MAX, |exp| {
            exp.saturating_sub(user.issued_at.unwrap_or(now))
        });
        r.longest_lifetime = r.longest_lifetime.max(lifetime);
        let Some(&at) = r.users.get(&user.id) else {
            return Ok(());
        };
        if user.issued_at.is_some_and(|iat| iat > at) {
            return Ok(());
        }
        let mut name = String::new();
        json::push_string(&mut name, &user.id);
        Err(Error::new(
            ErrorKind::Unauthorized,
            format!(
                "token refused: user {name} was disconnected by the application: get a new token"
            ),
        ))
    }

    /// Whether `who` may subscribe to `channel`.
    pub fn check_subscribe(&self, who: &Principal, channel: &ChannelName) -> Result<(), Error> {
        if let Some(owner) = channel.as_str().strip_prefix(PERSONAL_PREFIX) {
            return match who {
                Principal::Api => Ok(()),
                Principal::User(u) if &*u.id == owner || u.channels.matches(channel.as_str()) => {
                    Ok(())
                }
                Principal::User(_) => Err(refuse(
                    ErrorKind::Forbidden,
                    channel,
                    "is another user's personal channel",
                )),
                _ => Err(refuse(
                    ErrorKind::Unauthorized,
                    channel,
                    "is a personal channel: connect with its user's token",
                )),
            };
        }
        check(
            who,
            self.rules(channel).subscribe,
            Action::Subscribe,
            channel,
        )
    }

    /// Whether `who` may publish to `channel` as a client.
    pub fn check_publish(&self, who: &Principal, channel: &ChannelName) -> Result<(), Error> {
        if channel.as_str().starts_with(PERSONAL_PREFIX) && !matches!(who, Principal::Api) {
            return Err(refuse(
                ErrorKind::Forbidden,
                channel,
                "is a personal channel: send a direct message (\"send\") instead",
            ));
        }
        check(who, self.rules(channel).publish, Action::Publish, channel)
    }

    /// Whether `who` may send direct messages to users.
    pub fn check_send(&self, who: &Principal) -> Result<(), Error> {
        match (who, self.namespaces.personal().publish) {
            (Principal::Api, _) | (_, Access::Anyone) => Ok(()),
            (Principal::User(u), Access::Claim) if u.send => Ok(()),
            (Principal::User(_), Access::Users) => Ok(()),
            (Principal::User(_), _) => Err(Error::new(
                ErrorKind::Forbidden,
                "your token does not allow direct messages (it needs \"send\": true)",
            )),
            _ => Err(Error::new(
                ErrorKind::Unauthorized,
                "direct messages need a token: connect with one",
            )),
        }
    }
}

fn refuse(kind: ErrorKind, channel: &ChannelName, why: &str) -> Error {
    let mut name = String::new();
    json::push_string(&mut name, channel.as_str());
    Error::new(kind, format!("channel {name} {why}"))
}

#[derive(Clone, Copy)]
enum Action {
    Subscribe,
    Publish,
}

impl Action {
    fn verb(self) -> &'static str {
        match self {
            Action::Subscribe => "subscribe to",
            Action::Publish => "publish to",
        }
    }

    /// The claim that grants it, and its patterns in `user`.
    fn claim(self, user: &User) -> (&'static str, &Patterns) {
        match self {
            Action::Subscribe => ("channels", &user.channels),
            Action::Publish => ("publish", &user.publish),
        }
    }
}

/// The one rule for subscribe and publish: the token's claim grants; else
/// the namespace's access decides.
fn check(
    who: &Principal,
    access: Access,
    action: Action,
    channel: &ChannelName,
) -> Result<(), Error> {
    let user = match who {
        Principal::Api => return Ok(()),
        Principal::User(u) if action.claim(u).1.matches(channel.as_str()) => return Ok(()),
        Principal::User(u) => Some(u),
        _ => None,
    };
    let verb = action.verb();
    match (access, user) {
        (Access::Anyone, _) | (Access::Users, Some(_)) => Ok(()),
        (Access::Users | Access::Claim, None) => Err(refuse(
            ErrorKind::Unauthorized,
            channel,
            &format!("needs a token to {verb}: connect with one"),
        )),
        (Access::Claim, Some(u)) => Err(refuse(
            ErrorKind::Forbidden,
            channel,
            &format!(
                "is not in your token's \"{}\" claim, so you may not {verb} it",
                action.claim(u).0
            ),
        )),
        (Access::Nobody, _) => Err(refuse(
            ErrorKind::Forbidden,
            channel,
            &format!("is closed: clients may not {verb} it"),
        )),
    }
}

#[cfg(test)]
mod tests;
