//! WebRTC signaling's configuration and secrets: the ICE servers handed to
//! each client that joins a room (with short-lived TURN credentials when a
//! shared secret is configured), and the keys that let a connection prove
//! it is itself when it signals over `POST /command`.
//!
//! Rooms, their members and the relay decision are the hub's
//! (`hub/room.rs`); this module holds what they are configured with.

use std::fmt::Write as _;
use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};

use crate::auth::UserId;
use crate::hub::SubscriberId;
use crate::json;

/// The default of [`RtcConfig::max_signal_size`]: 32 KiB of JSON. An SDP
/// offer for audio, video and a data channel is 4 to 10 KB; simulcast
/// and many codecs take it past 16 KB, and nothing legitimate near 32.
pub const MAX_SIGNAL_SIZE: usize = 32 * 1024;

/// The default lifetime of TURN credentials made from a shared secret:
/// one day, the value of the TURN REST API draft. The TURN server checks
/// them on every allocation refresh, so they must outlast a call.
pub const TURN_CREDENTIAL_TTL: Duration = Duration::from_secs(24 * 3600);

/// How TURN servers (`turn:`/`turns:` URLs) are given credentials.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum TurnCredentials {
    /// None: the URLs are handed out bare (STUN needs none).
    #[default]
    None,
    /// The same username and password for everyone.
    Fixed {
        /// The TURN username.
        username: String,
        /// Its password.
        credential: String,
    },
    /// coturn's `use-auth-secret` (the TURN REST API): per client,
    /// username `EXPIRY:NAME` and password `base64(HMAC-SHA1(secret,
    /// username))`, which the TURN server checks with the same secret and
    /// refuses after `EXPIRY` (seconds since the Unix epoch).
    Secret {
        /// The secret shared with the TURN server (`static-auth-secret`).
        secret: String,
        /// How long the credentials last.
        ttl: Duration,
    },
}

// By hand: secrets never reach a log.
impl std::fmt::Debug for TurnCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TurnCredentials::None => f.write_str("None"),
            TurnCredentials::Fixed { username, .. } => f
                .debug_struct("Fixed")
                .field("username", username)
                .finish_non_exhaustive(),
            TurnCredentials::Secret { ttl, .. } => f
                .debug_struct("Secret")
                .field("ttl", ttl)
                .finish_non_exhaustive(),
        }
    }
}

/// What the hub needs to run rooms.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RtcConfig {
    /// STUN and TURN server URLs (`stun:host:port`, `turn:host:port?transport=udp`,
    /// `turns:…`), in the order clients should try them.
    pub ice_servers: Vec<String>,
    /// Credentials of the `turn:`/`turns:` URLs.
    pub turn: TurnCredentials,
    /// Largest `data` of one signal, in bytes of JSON; 0: [`MAX_SIGNAL_SIZE`].
    pub max_signal_size: usize,
}

impl RtcConfig {
    /// The largest `data` of one signal.
    pub fn signal_limit(&self) -> usize {
        if self.max_signal_size == 0 {
            MAX_SIGNAL_SIZE
        } else {
            self.max_signal_size
        }
    }

    /// The `iceServers` of an `RTCConfiguration`, as JSON, for `client`
    /// (of `user`) at `now_secs`: one entry per URL, the TURN ones with
    /// credentials. `[]` when none are configured.
    pub fn ice_servers_json(
        &self,
        client: SubscriberId,
        user: Option<&UserId>,
        now_secs: u64,
    ) -> String {
        let mut out = String::from("[");
        for (i, url) in self.ice_servers.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str("{\"urls\":[");
            json::push_string(&mut out, url);
            out.push(']');
            if is_turn(url) {
                let creds = match &self.turn {
                    TurnCredentials::None => None,
                    TurnCredentials::Fixed {
                        username,
                        credential,
                    } => Some((username.clone(), credential.clone())),
                    TurnCredentials::Secret { secret, ttl } => {
                        let name = match user {
                            Some(u) => u.to_string(),
                            None => format!("c{client}"),
                        };
                        Some(turn_rest_credentials(
                            secret,
                            now_secs.saturating_add(ttl.as_secs()),
                            &name,
                        ))
                    }
                };
                if let Some((username, credential)) = creds {
                    out.push_str(",\"username\":");
                    json::push_string(&mut out, &username);
                    out.push_str(",\"credential\":");
                    json::push_string(&mut out, &credential);
                }
            }
            out.push('}');
        }
        out.push(']');
        out
    }
}

fn is_turn(url: &str) -> bool {
    url.starts_with("turn:") || url.starts_with("turns:")
}

/// The TURN REST API's credentials for `name`, valid until `expiry`
/// (seconds since the Unix epoch): `("EXPIRY:NAME", base64(HMAC-SHA1(secret, username)))`.
pub fn turn_rest_credentials(secret: &str, expiry: u64, name: &str) -> (String, String) {
    let mut username = String::with_capacity(name.len() + 12);
    let _ = write!(username, "{expiry}:{name}");
    let mut mac =
        Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(username.as_bytes());
    let credential = STANDARD.encode(mac.finalize().into_bytes());
    (username, credential)
}

/// Makes and checks client keys: `base64url(HMAC-SHA256(secret, id))`,
/// 128 bits. A key is computed, never stored, so a connection costs
/// nothing more for having one.
#[derive(Clone)]
pub struct ClientKeys {
    secret: [u8; 32],
}

impl std::fmt::Debug for ClientKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientKeys")
    }
}

impl Default for ClientKeys {
    fn default() -> Self {
        Self::random()
    }
}

impl ClientKeys {
    /// Keys under a secret drawn at random: valid in this process only.
    pub fn random() -> Self {
        ClientKeys {
            secret: rand::random(),
        }
    }

    /// Keys under `secret`: the same on every node that has it (a
    /// cluster's, shared through its broker).
    pub fn from_secret(secret: [u8; 32]) -> Self {
        ClientKeys { secret }
    }

    fn mac(&self, id: SubscriberId) -> Hmac<sha2::Sha256> {
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&self.secret).expect("any key");
        mac.update(&id.to_be_bytes());
        mac
    }

    /// The key of connection `id`.
    pub fn key(&self, id: SubscriberId) -> String {
        URL_SAFE_NO_PAD.encode(&self.mac(id).finalize().into_bytes()[..16])
    }

    /// Whether `key` is connection `id`'s, compared in constant time.
    pub fn check(&self, id: SubscriberId, key: &str) -> bool {
        let mut bytes = [0u8; 16];
        match URL_SAFE_NO_PAD.decode_slice(key, &mut bytes) {
            Ok(16) => self.mac(id).verify_truncated_left(&bytes).is_ok(),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn turn_rest_credentials_match_coturns_scheme() {
        // Computed independently: python3 -c "import hmac,hashlib,base64;
        // print(base64.b64encode(hmac.new(b'north',b'1700086400:alice',hashlib.sha1).digest()))"
        assert_eq!(
            turn_rest_credentials("north", 1_700_086_400, "alice"),
            (
                "1700086400:alice".to_string(),
                "SXua5ne/+mDhiHTp0pQJzRO4ESg=".to_string()
            )
        );
    }

    #[test]
    fn ice_servers_are_an_rtc_configuration() {
        let mut rtc = RtcConfig {
            ice_servers: vec![
                "stun:stun.example.org:3478".into(),
                "turn:turn.example.org:3478?transport=udp".into(),
                "turns:turn.example.org:5349".into(),
            ],
            ..RtcConfig::default()
        };
        let parse = |s: String| -> serde_json::Value { serde_json::from_str(&s).unwrap() };
        assert_eq!(
            parse(rtc.ice_servers_json(12, None, 0)),
            serde_json::json!([{"urls":["stun:stun.example.org:3478"]},
                {"urls":["turn:turn.example.org:3478?transport=udp"]},
                {"urls":["turns:turn.example.org:5349"]}])
        );
        rtc.turn = TurnCredentials::Secret {
            secret: "north".into(),
            ttl: Duration::from_secs(86_400),
        };
        let v = parse(rtc.ice_servers_json(12, None, 1_700_000_000));
        assert_eq!(
            v[0],
            serde_json::json!({"urls":["stun:stun.example.org:3478"]})
        );
        assert_eq!(v[1]["username"], "1700086400:c12");
        assert_eq!(v[1]["credential"], "NIAnwruyO935zP9ih6Pyt4PAjTE=");
        assert_eq!(v[2]["username"], "1700086400:c12");
        let v = parse(rtc.ice_servers_json(12, Some(&Arc::from("alice")), 1_700_000_000));
        assert_eq!(v[1]["credential"], "SXua5ne/+mDhiHTp0pQJzRO4ESg=");
        rtc.turn = TurnCredentials::Fixed {
            username: "u".into(),
            credential: "p\"w".into(),
        };
        let v = parse(rtc.ice_servers_json(12, None, 0));
        assert_eq!(v[1]["username"], "u");
        assert_eq!(v[2]["credential"], "p\"w");
        assert!(!format!("{:?}", rtc.turn).contains("p\\\"w"));
        assert_eq!(RtcConfig::default().ice_servers_json(1, None, 0), "[]");
    }

    #[test]
    fn a_client_key_proves_its_connection_only() {
        let keys = ClientKeys::random();
        let k = keys.key(12);
        assert_eq!(k.len(), 22);
        assert!(keys.check(12, &k));
        assert!(!keys.check(13, &k));
        assert!(!ClientKeys::random().check(12, &k), "another process's key");
        assert!(!keys.check(12, ""));
        assert!(!keys.check(12, &k[..21]));
        assert!(!keys.check(12, "!!!!!!!!!!!!!!!!!!!!!!"));
        assert!(!keys.check(12, &format!("{k}AA")));
    }
}
