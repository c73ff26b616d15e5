//! JWT checking: which keys sign tokens, and a token's claims as a [`User`].
//!
//! The `alg` a token names is only trusted to pick among the algorithms
//! this server's own keys were configured for: an HMAC secret checks
//! HS256/384/512, an RSA public key RS256/384/512, an EC P-256 key ES256.
//! So `alg: none` and algorithm confusion (an HS256 token "signed" with an
//! RSA public key as its HMAC secret) are refused before any signature
//! check, and each refusal says which.
//!
//! Time is an input (`now`, seconds since the Unix epoch): expiry is tested
//! without waiting, like everything else in the core.

use std::collections::HashSet;

use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::{Patterns, User};
use crate::error::{Error, ErrorKind};

/// Longest token accepted, in bytes: far above any real JWT, and it bounds
/// the work a hostile one causes.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// Longest `sub`, in bytes.
pub const MAX_USER_LEN: usize = 200;

/// Where tokens are checked from: at least one key, and what the claims
/// must say.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    /// An HMAC secret (HS256, HS384, HS512).
    pub hmac_secret: Option<String>,
    /// A public key in PEM: RSA (RS256, RS384, RS512) or EC P-256 (ES256).
    pub public_key_pem: Option<Vec<u8>>,
    /// A JSON Web Key Set; a token names its key by `kid`.
    pub jwks_json: Option<String>,
    /// The `aud` every token must carry, when set.
    pub audience: Option<String>,
    /// The `iss` every token must carry, when set.
    pub issuer: Option<String>,
    /// Accept tokens without `exp` (they never expire).
    pub allow_no_exp: bool,
    /// Seconds of clock difference tolerated on `exp` and `nbf`.
    pub leeway: u64,
}

impl AuthConfig {
    /// Whether any key is configured.
    pub fn has_key(&self) -> bool {
        self.hmac_secret.is_some() || self.public_key_pem.is_some() || self.jwks_json.is_some()
    }
}

struct Key {
    kid: Option<String>,
    algorithms: Vec<Algorithm>,
    key: DecodingKey,
}

/// Checks tokens against the configured keys and claims.
pub struct Verifier {
    keys: Vec<Key>,
    config: AuthConfig,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("algorithms", &self.algorithms())
            .finish_non_exhaustive()
    }
}

fn config_error(message: String) -> Error {
    Error::new(ErrorKind::BadRequest, message)
}

const HMAC: [Algorithm; 3] = [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];
const RSA: [Algorithm; 3] = [Algorithm::RS256, Algorithm::RS384, Algorithm::RS512];

impl Verifier {
    /// A verifier of `config`'s keys; an unreadable key is an error that
    /// says which (the server refuses to start).
    pub fn new(config: AuthConfig) -> Result<Self, Error> {
        let mut keys = Vec::new();
        if let Some(secret) = &config.hmac_secret {
            if secret.len() < 32 {
                return Err(config_error(
                    "the HMAC secret must be at least 32 bytes (HS256 is only as strong as its secret)"
                        .into(),
                ));
            }
            let key = DecodingKey::from_secret(secret.as_bytes())
                .map_err(|e| config_error(format!("the HMAC secret: {e}")))?;
            keys.push(Key {
                kid: None,
                algorithms: HMAC.to_vec(),
                key,
            });
        }
        if let Some(pem) = &config.public_key_pem {
            keys.push(public_key(pem)?);
        }
        if let Some(jwks) = &config.jwks_json {
            keys.extend(jwks_keys(jwks)?);
        }
        if keys.is_empty() {
            return Err(config_error(
                "no key to check tokens with: give an HMAC secret, a public key or a JWKS".into(),
            ));
        }
        Ok(Verifier { keys, config })
    }

    /// Whether a token that expires at `exp` is still valid at `now`.
    pub fn alive(&self, exp: Option<u64>, now: u64) -> bool {
        exp.is_none_or(|exp| exp.saturating_add(self.config.leeway) > now)
    }

    /// The algorithms a token may be signed with here.
    pub fn algorithms(&self) -> Vec<Algorithm> {
        let mut all: Vec<Algorithm> = Vec::new();
        for k in &self.keys {
            for a in &k.algorithms {
                if !all.contains(a) {
                    all.push(*a);
                }
            }
        }
        all
    }

    /// The user `token` names, if it is valid at `now` (seconds since the
    /// Unix epoch). Every refusal is [`ErrorKind::Unauthorized`] or
    /// [`ErrorKind::TokenExpired`], with a message that says why.
    pub fn verify(&self, token: &str, now: u64) -> Result<User, Error> {
        let unauthorized = |m: String| Error::new(ErrorKind::Unauthorized, m);
        if token.len() > MAX_TOKEN_LEN {
            return Err(unauthorized(format!(
                "malformed token: longer than {MAX_TOKEN_LEN} bytes"
            )));
        }
        let (alg, kid) = read_header(token)?;
        if alg.eq_ignore_ascii_case("none") {
            return Err(unauthorized(
                "token refused: \"alg\": \"none\" (unsigned) tokens are never accepted".into(),
            ));
        }
        let accepted = self.algorithms();
        let names = || {
            accepted
                .iter()
                .map(|a| format!("{a:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let Some(algorithm) = accepted.iter().find(|a| format!("{a:?}") == alg).copied() else {
            return Err(unauthorized(format!(
                "token refused: it is signed with {alg:?}, but this server's keys check {} only",
                names()
            )));
        };
        let key = self
            .keys
            .iter()
            .filter(|k| k.algorithms.contains(&algorithm))
            .find(|k| match (&kid, &k.kid) {
                (Some(want), Some(have)) => want == have,
                (_, None) => true,
                (None, Some(_)) => true,
            })
            .ok_or_else(|| {
                unauthorized(format!(
                    "token refused: no key with \"kid\" {:?} in the key set",
                    kid.as_deref().unwrap_or("")
                ))
            })?;
        let mut validation = Validation::new(algorithm);
        // Expiry is checked below against `now`, so that it is an input.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.required_spec_claims = HashSet::new();
        validation.validate_aud = self.config.audience.is_some();
        if let Some(aud) = &self.config.audience {
            validation.set_audience(&[aud]);
            validation.required_spec_claims.insert("aud".into());
        }
        if let Some(iss) = &self.config.issuer {
            validation.set_issuer(&[iss]);
            validation.required_spec_claims.insert("iss".into());
        }
        let data = jsonwebtoken::decode::<Claims>(token, &key.key, &validation)
            .map_err(|e| self.explain(e))?;
        self.user(data.claims, now)
    }

    fn explain(&self, e: jsonwebtoken::errors::Error) -> Error {
        use jsonwebtoken::errors::ErrorKind as K;
        let message = match e.kind() {
            K::InvalidSignature => {
                "token refused: bad signature (it was not signed by a key this server trusts)"
                    .to_owned()
            }
            K::InvalidAudience => format!(
                "token refused: its \"aud\" is not {:?}",
                self.config.audience.as_deref().unwrap_or("")
            ),
            K::InvalidIssuer => format!(
                "token refused: its \"iss\" is not {:?}",
                self.config.issuer.as_deref().unwrap_or("")
            ),
            K::MissingRequiredClaim(c) => format!("token refused: it has no {c:?} claim"),
            K::InvalidAlgorithm => "token refused: its algorithm does not fit the key".to_owned(),
            K::Json(_) => format!("token refused: a claim has the wrong type ({e})"),
            _ => format!("malformed token: {e}"),
        };
        Error::new(ErrorKind::Unauthorized, message).with_source(e)
    }

    fn user(&self, claims: Claims, now: u64) -> Result<User, Error> {
        let unauthorized = |m: &str| Error::new(ErrorKind::Unauthorized, m.to_owned());
        let id = claims
            .sub
            .filter(|s| !s.is_empty())
            .ok_or_else(|| unauthorized("token refused: it has no \"sub\" (the user id)"))?;
        if id.len() > MAX_USER_LEN || id.chars().any(char::is_control) {
            return Err(unauthorized(&format!(
                "token refused: \"sub\" must be at most {MAX_USER_LEN} bytes, without control characters"
            )));
        }
        match claims.exp {
            None if !self.config.allow_no_exp => {
                return Err(unauthorized(
                    "token refused: it has no \"exp\"; this server requires tokens that expire",
                ))
            }
            Some(exp) if exp.saturating_add(self.config.leeway) <= now => {
                return Err(Error::new(
                    ErrorKind::TokenExpired,
                    format!("token expired {} s ago: get a fresh one", now - exp),
                ))
            }
            _ => {}
        }
        if claims
            .nbf
            .is_some_and(|nbf| nbf > now.saturating_add(self.config.leeway))
        {
            return Err(unauthorized("token refused: it is not valid yet (\"nbf\")"));
        }
        let patterns = |list: Vec<String>, claim: &str| {
            Patterns::new(list).map_err(|e| {
                Error::new(
                    ErrorKind::Unauthorized,
                    format!("token refused: \"{claim}\": {}", e.message()),
                )
            })
        };
        Ok(User {
            id: id.into(),
            channels: patterns(claims.channels, "channels")?,
            publish: patterns(claims.publish, "publish")?,
            send: claims.send,
            expires: claims.exp,
            issued_at: claims.iat,
            admin: claims.admin,
        })
    }
}

/// The header's `alg` and `kid`, read before anything else so that a
/// refusal can name them.
fn read_header(token: &str) -> Result<(String, Option<String>), Error> {
    #[derive(Deserialize)]
    struct Head {
        alg: Option<String>,
        kid: Option<String>,
    }
    let malformed = |why: &str| {
        Error::new(
            ErrorKind::Unauthorized,
            format!("malformed token: {why} (a JWT is header.payload.signature, base64url)"),
        )
    };
    if token.split('.').count() != 3 {
        return Err(malformed("not three dot-separated parts"));
    }
    let head = token.split('.').next().unwrap_or("");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(head.trim_end_matches('='))
        .map_err(|_| malformed("the header is not base64url"))?;
    let head: Head =
        serde_json::from_slice(&bytes).map_err(|_| malformed("the header is not a JSON object"))?;
    let alg = head
        .alg
        .ok_or_else(|| malformed("the header has no \"alg\""))?;
    Ok((alg, head.kid))
}

fn public_key(pem: &[u8]) -> Result<Key, Error> {
    let text = String::from_utf8_lossy(pem);
    if text.contains("PRIVATE KEY") {
        return Err(config_error(
            "the public key file holds a private key: give pushgate the public half only".into(),
        ));
    }
    if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
        return Ok(Key {
            kid: None,
            algorithms: RSA.to_vec(),
            key,
        });
    }
    if let Ok(key) = DecodingKey::from_ec_pem(pem) {
        return Ok(Key {
            kid: None,
            algorithms: vec![Algorithm::ES256],
            key,
        });
    }
    Err(config_error(
        "the public key is neither an RSA nor an EC (P-256) public key in PEM".into(),
    ))
}

fn jwks_keys(json: &str) -> Result<Vec<Key>, Error> {
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_str(json)
        .map_err(|e| config_error(format!("the JWKS is not a JSON Web Key Set: {e}")))?;
    let mut keys = Vec::new();
    for jwk in &set.keys {
        let kid = jwk.common.key_id.clone();
        let key = DecodingKey::from_jwk(jwk).map_err(|e| {
            config_error(format!(
                "the JWKS key {:?} is unusable: {e}",
                kid.as_deref().unwrap_or("")
            ))
        })?;
        let algorithms = match &jwk.algorithm {
            jsonwebtoken::jwk::AlgorithmParameters::RSA(_) => RSA.to_vec(),
            jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(_) => vec![Algorithm::ES256],
            jsonwebtoken::jwk::AlgorithmParameters::OctetKey(_) => HMAC.to_vec(),
            _ => continue,
        };
        keys.push(Key {
            kid,
            algorithms,
            key,
        });
    }
    if keys.is_empty() {
        return Err(config_error(
            "the JWKS has no RSA, EC or HMAC key".to_owned(),
        ));
    }
    Ok(keys)
}

/// The claims pushgate reads from a token, and writes when it mints one.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// The user id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// Expiry, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
    /// Not before, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued at, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Channel patterns the user may subscribe to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<String>,
    /// Channel patterns the user may publish to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publish: Vec<String>,
    /// Whether the user may send direct messages.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub send: bool,
    /// The audience (checked only when the server is configured with one).
    #[serde(default, skip_serializing)]
    pub aud: Option<serde_json::Value>,
    /// The issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// An administrator: the server API and the `/admin` dashboard accept
    /// the token as they accept the API key (only with `admin` enabled).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub admin: bool,
}

/// Signs `claims` with an HMAC `secret` (HS256), for `pushgate token` and
/// tests; `audience` is written as `aud` when given.
pub fn mint_hs256(secret: &str, claims: &Claims, audience: Option<&str>) -> Result<String, Error> {
    let mut value = serde_json::to_value(claims)
        .map_err(|e| Error::new(ErrorKind::BadRequest, format!("claims: {e}")))?;
    if let (Some(aud), Some(map)) = (audience, value.as_object_mut()) {
        map.insert("aud".into(), aud.into());
    }
    let key = EncodingKey::from_secret(secret.as_bytes())
        .map_err(|e| Error::new(ErrorKind::BadRequest, format!("the HMAC secret: {e}")))?;
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &value, &key)
        .map_err(|e| Error::new(ErrorKind::BadRequest, format!("cannot sign the token: {e}")))
}
