use std::sync::Arc;

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};

use super::token::{mint_hs256, AuthConfig, Claims, Verifier};
use super::*;
use crate::namespace::{Namespace, Namespaces, Rules};

const SECRET: &str = "a-test-secret-that-is-long-enough!!";
const NOW: u64 = 1_800_000_000;
const RSA_PUBLIC: &[u8] = include_bytes!("testdata/rsa-public.pem");
const RSA_PRIVATE: &[u8] = include_bytes!("testdata/rsa-private.pem");
const EC_PUBLIC: &[u8] = include_bytes!("testdata/ec-public.pem");
const EC_PRIVATE: &[u8] = include_bytes!("testdata/ec-private.pem");

fn claims(sub: &str) -> Claims {
    Claims {
        sub: Some(sub.into()),
        exp: Some(NOW + 60),
        channels: vec!["chat:*".into()],
        publish: vec!["chat:lobby".into()],
        ..Claims::default()
    }
}

fn hmac() -> Verifier {
    Verifier::new(AuthConfig {
        hmac_secret: Some(SECRET.into()),
        ..AuthConfig::default()
    })
    .unwrap()
}

fn refusal(v: &Verifier, token: &str) -> (ErrorKind, String) {
    let e = v.verify(token, NOW).unwrap_err();
    (e.kind(), e.message().to_owned())
}

fn sign(alg: Algorithm, key: &EncodingKey, claims: &Claims, kid: Option<&str>) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(Into::into);
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

fn b64(json: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
}

#[test]
fn a_valid_hs256_token_makes_its_user() {
    let token = mint_hs256(SECRET, &claims("alice"), None).unwrap();
    let user = hmac().verify(&token, NOW).unwrap();
    assert_eq!(&*user.id, "alice");
    assert!(user.channels.matches("chat:room1"));
    assert!(!user.channels.matches("news"));
    assert!(user.publish.matches("chat:lobby"));
    assert!(!user.publish.matches("chat:lobby2"));
    assert_eq!(user.expires, Some(NOW + 60));
    assert_eq!(user.personal_channel().unwrap().as_str(), "#alice");
}

#[test]
fn the_admin_claim_is_read_and_only_true_makes_an_admin() {
    let v = hmac();
    let plain = mint_hs256(SECRET, &claims("alice"), None).unwrap();
    assert!(!v.verify(&plain, NOW).unwrap().admin);
    let admin = Claims {
        admin: true,
        ..claims("ops")
    };
    let token = mint_hs256(SECRET, &admin, None).unwrap();
    assert!(v.verify(&token, NOW).unwrap().admin);
    // Written only when true, so ordinary tokens stay as they were.
    let payload = plain.split('.').nth(1).unwrap();
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    assert!(!String::from_utf8(json).unwrap().contains("admin"));
    // `"admin": "yes"` is not a boolean: refused, not read as false.
    let key = EncodingKey::from_secret(SECRET.as_bytes()).unwrap();
    let stringly = serde_json::json!({"sub": "ops", "exp": NOW + 60, "admin": "yes"});
    let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &stringly, &key).unwrap();
    let (kind, why) = refusal(&v, &token);
    assert_eq!(kind, ErrorKind::Unauthorized);
    assert!(why.contains("wrong type"), "{why}");
}

#[test]
fn every_refusal_says_why() {
    let v = hmac();
    let expired = Claims {
        exp: Some(NOW - 5),
        ..claims("a")
    };
    let (kind, why) = refusal(&v, &mint_hs256(SECRET, &expired, None).unwrap());
    assert_eq!(kind, ErrorKind::TokenExpired);
    assert!(why.contains("expired 5 s ago"), "{why}");

    let at_exp = Claims {
        exp: Some(NOW),
        ..claims("a")
    };
    assert_eq!(
        refusal(&v, &mint_hs256(SECRET, &at_exp, None).unwrap()).0,
        ErrorKind::TokenExpired,
        "a token is dead at its exp second"
    );

    let other = mint_hs256("another-secret-that-is-long-enough!", &claims("a"), None).unwrap();
    let (kind, why) = refusal(&v, &other);
    assert_eq!(kind, ErrorKind::Unauthorized);
    assert!(why.contains("bad signature"), "{why}");

    let body = b64(r#"{"sub":"a","exp":1900000000}"#);
    let none = format!("{}.{body}.", b64(r#"{"alg":"none","typ":"JWT"}"#));
    let (_, why) = refusal(&v, &none);
    assert!(why.contains("\"none\""), "{why}");
    let none_caps = format!("{}.{body}.", b64(r#"{"alg":"NONE"}"#));
    assert!(refusal(&v, &none_caps).1.contains("\"none\""));

    let no_exp = Claims {
        exp: None,
        ..claims("a")
    };
    assert!(refusal(&v, &mint_hs256(SECRET, &no_exp, None).unwrap())
        .1
        .contains("no \"exp\""));
    let no_sub = Claims {
        sub: None,
        ..claims("a")
    };
    assert!(refusal(&v, &mint_hs256(SECRET, &no_sub, None).unwrap())
        .1
        .contains("\"sub\""));
    let later = Claims {
        nbf: Some(NOW + 100),
        ..claims("a")
    };
    assert!(refusal(&v, &mint_hs256(SECRET, &later, None).unwrap())
        .1
        .contains("nbf"));

    for junk in ["", "abc", "a.b", "a.b.c", "!!.!!.!!"] {
        let (kind, why) = refusal(&v, junk);
        assert_eq!(kind, ErrorKind::Unauthorized, "{junk:?}");
        assert!(why.starts_with("malformed token"), "{junk:?}: {why}");
    }
    let huge = "a".repeat(token::MAX_TOKEN_LEN + 1);
    assert!(refusal(&v, &huge).1.contains("longer than"));
}

#[test]
fn tokens_without_exp_pass_only_when_allowed() {
    let v = Verifier::new(AuthConfig {
        hmac_secret: Some(SECRET.into()),
        allow_no_exp: true,
        ..AuthConfig::default()
    })
    .unwrap();
    let no_exp = Claims {
        exp: None,
        ..claims("a")
    };
    assert!(v
        .verify(&mint_hs256(SECRET, &no_exp, None).unwrap(), NOW)
        .is_ok());
}

#[test]
fn audience_and_issuer_are_checked_when_configured() {
    let v = Verifier::new(AuthConfig {
        hmac_secret: Some(SECRET.into()),
        audience: Some("pushgate".into()),
        issuer: Some("https://app.example".into()),
        ..AuthConfig::default()
    })
    .unwrap();
    let with_iss = Claims {
        iss: Some("https://app.example".into()),
        ..claims("a")
    };
    assert!(v
        .verify(
            &mint_hs256(SECRET, &with_iss, Some("pushgate")).unwrap(),
            NOW
        )
        .is_ok());
    let (_, why) = refusal(&v, &mint_hs256(SECRET, &with_iss, Some("other")).unwrap());
    assert!(why.contains("\"aud\""), "{why}");
    let (_, why) = refusal(&v, &mint_hs256(SECRET, &with_iss, None).unwrap());
    assert!(why.contains("aud"), "{why}");
    let wrong_iss = Claims {
        iss: Some("https://evil.example".into()),
        ..claims("a")
    };
    let (_, why) = refusal(
        &v,
        &mint_hs256(SECRET, &wrong_iss, Some("pushgate")).unwrap(),
    );
    assert!(why.contains("\"iss\""), "{why}");
}

#[test]
fn rsa_and_ec_public_keys_check_their_own_algorithms() {
    let rsa = Verifier::new(AuthConfig {
        public_key_pem: Some(RSA_PUBLIC.to_vec()),
        ..AuthConfig::default()
    })
    .unwrap();
    let rsa_key = EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap();
    let token = sign(Algorithm::RS256, &rsa_key, &claims("bob"), None);
    assert_eq!(&*rsa.verify(&token, NOW).unwrap().id, "bob");

    // Algorithm confusion: HS256 "signed" with the RSA public key as secret.
    let confused = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims("mallory"),
        &EncodingKey::from_secret(RSA_PUBLIC).unwrap(),
    )
    .unwrap();
    let (kind, why) = refusal(&rsa, &confused);
    assert_eq!(kind, ErrorKind::Unauthorized);
    assert!(why.contains("\"HS256\"") && why.contains("RS256"), "{why}");

    let ec = Verifier::new(AuthConfig {
        public_key_pem: Some(EC_PUBLIC.to_vec()),
        ..AuthConfig::default()
    })
    .unwrap();
    let ec_key = EncodingKey::from_ec_pem(EC_PRIVATE).unwrap();
    let token = sign(Algorithm::ES256, &ec_key, &claims("carol"), None);
    assert_eq!(&*ec.verify(&token, NOW).unwrap().id, "carol");
    assert!(
        refusal(&ec, &sign(Algorithm::RS256, &rsa_key, &claims("x"), None))
            .1
            .contains("\"RS256\"")
    );

    assert!(Verifier::new(AuthConfig {
        public_key_pem: Some(RSA_PRIVATE.to_vec()),
        ..AuthConfig::default()
    })
    .unwrap_err()
    .message()
    .contains("private key"));
    assert!(Verifier::new(AuthConfig {
        hmac_secret: Some("short".into()),
        ..AuthConfig::default()
    })
    .is_err());
    assert!(Verifier::new(AuthConfig::default()).is_err());
}

#[test]
fn a_jwks_key_is_chosen_by_kid() {
    use jsonwebtoken::jwk::{Jwk, JwkSet};
    let rsa_key = EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap();
    let ec_key = EncodingKey::from_ec_pem(EC_PRIVATE).unwrap();
    let mut rsa_jwk = Jwk::from_encoding_key(&rsa_key, Algorithm::RS256).unwrap();
    rsa_jwk.common.key_id = Some("r1".into());
    let mut ec_jwk = Jwk::from_encoding_key(&ec_key, Algorithm::ES256).unwrap();
    ec_jwk.common.key_id = Some("e1".into());
    let set = JwkSet {
        keys: vec![rsa_jwk, ec_jwk],
    };
    let v = Verifier::new(AuthConfig {
        jwks_json: Some(serde_json::to_string(&set).unwrap()),
        ..AuthConfig::default()
    })
    .unwrap();
    let t = sign(Algorithm::RS256, &rsa_key, &claims("r"), Some("r1"));
    assert_eq!(&*v.verify(&t, NOW).unwrap().id, "r");
    let t = sign(Algorithm::ES256, &ec_key, &claims("e"), Some("e1"));
    assert_eq!(&*v.verify(&t, NOW).unwrap().id, "e");
    let t = sign(Algorithm::RS256, &rsa_key, &claims("r"), Some("nope"));
    assert!(refusal(&v, &t).1.contains("\"nope\""));
}

#[test]
fn patterns_are_exact_or_a_trailing_star() {
    let p = Patterns::new(["chat:*", "news", "a*b"]).unwrap();
    assert!(p.matches("chat:"));
    assert!(p.matches("chat:x"));
    assert!(!p.matches("chat"));
    assert!(p.matches("news"));
    assert!(!p.matches("news2"));
    assert!(p.matches("a*b"), "a star inside is a character");
    assert!(!p.matches("axb"));
    assert!(Patterns::new(["*"]).unwrap().matches("anything"));
    assert!(!Patterns::default().matches("x"));
    assert!(Patterns::new([""]).is_err());
}

fn ch(name: &str) -> ChannelName {
    ChannelName::new(name).unwrap()
}

fn user(id: &str, channels: &[&str], publish: &[&str], send: bool) -> Principal {
    Principal::User(Arc::new(User {
        id: id.into(),
        channels: Patterns::new(channels).unwrap(),
        publish: Patterns::new(publish).unwrap(),
        send,
        expires: None,
        issued_at: None,
        admin: false,
    }))
}

#[test]
fn the_policy_decides_by_claim_then_namespace() {
    let public = Rules {
        subscribe: Access::Anyone,
        publish: Access::Nobody,
        ..Rules::closed()
    };
    let members = Rules {
        subscribe: Access::Users,
        publish: Access::Users,
        ..Rules::closed()
    };
    let policy = Policy::new(
        Some(hmac()),
        Namespaces::new(
            Rules::closed(),
            Rules::closed(),
            vec![
                Namespace::new("public", public).unwrap(),
                Namespace::new("members", members).unwrap(),
            ],
        ),
    );
    let anon = Principal::Anonymous;
    let alice = user("alice", &["chat:*"], &["chat:lobby"], false);
    let bob = user("bob", &[], &[], true);
    let kind = |r: Result<(), Error>| r.map_err(|e| e.kind());
    use ErrorKind::{Forbidden, Unauthorized};

    assert_eq!(
        kind(policy.check_subscribe(&anon, &ch("public:news"))),
        Ok(())
    );
    assert_eq!(
        kind(policy.check_publish(&anon, &ch("public:news"))),
        Err(Forbidden)
    );
    assert_eq!(
        kind(policy.check_publish(&alice, &ch("public:news"))),
        Err(Forbidden)
    );
    assert_eq!(
        kind(policy.check_subscribe(&anon, &ch("members:x"))),
        Err(Unauthorized)
    );
    assert_eq!(kind(policy.check_subscribe(&bob, &ch("members:x"))), Ok(()));
    assert_eq!(kind(policy.check_publish(&bob, &ch("members:x"))), Ok(()));
    assert_eq!(
        kind(policy.check_subscribe(&anon, &ch("chat:a"))),
        Err(Unauthorized)
    );
    assert_eq!(kind(policy.check_subscribe(&alice, &ch("chat:a"))), Ok(()));
    assert_eq!(
        kind(policy.check_subscribe(&bob, &ch("chat:a"))),
        Err(Forbidden)
    );
    assert_eq!(
        kind(policy.check_publish(&alice, &ch("chat:lobby"))),
        Ok(())
    );
    assert_eq!(
        kind(policy.check_publish(&alice, &ch("chat:a"))),
        Err(Forbidden)
    );
    let why = policy
        .check_publish(&alice, &ch("chat:a"))
        .unwrap_err()
        .message()
        .to_owned();
    assert!(why.contains("\"publish\" claim"), "{why}");

    // Personal channels: the owner only; publishing is by `send`.
    assert_eq!(kind(policy.check_subscribe(&alice, &ch("#alice"))), Ok(()));
    assert_eq!(
        kind(policy.check_subscribe(&bob, &ch("#alice"))),
        Err(Forbidden)
    );
    assert_eq!(
        kind(policy.check_subscribe(&anon, &ch("#alice"))),
        Err(Unauthorized)
    );
    assert_eq!(
        kind(policy.check_publish(&alice, &ch("#alice"))),
        Err(Forbidden)
    );
    assert_eq!(kind(policy.check_send(&alice)), Err(Forbidden));
    assert_eq!(kind(policy.check_send(&bob)), Ok(()));
    assert_eq!(kind(policy.check_send(&anon)), Err(Unauthorized));

    // The API may do anything.
    assert_eq!(
        kind(policy.check_subscribe(&Principal::Api, &ch("#alice"))),
        Ok(())
    );
    assert_eq!(
        kind(policy.check_publish(&Principal::Api, &ch("#alice"))),
        Ok(())
    );
}

#[test]
fn an_open_policy_lets_everyone_in_and_refuses_tokens() {
    let policy = Policy::open();
    assert!(!policy.checks_tokens());
    assert_eq!(policy.authenticate(None, NOW), Ok(Principal::Anonymous));
    let e = policy.authenticate(Some("x.y.z"), NOW).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthorized);
    assert!(policy
        .check_subscribe(&Principal::Anonymous, &ch("anything"))
        .is_ok());
    assert!(policy
        .check_publish(&Principal::Anonymous, &ch("anything"))
        .is_ok());
}

#[test]
fn a_disconnected_users_older_tokens_are_refused_until_they_expire() {
    let policy = Policy::new(Some(hmac()), Namespaces::default());
    let token = |sub: &str, iat: Option<u64>, exp: u64| {
        let c = Claims {
            iat,
            exp: Some(exp),
            ..claims(sub)
        };
        mint_hs256(SECRET, &c, None).unwrap()
    };
    let before = token("alice", Some(NOW - 10), NOW + 60);
    let no_iat = token("alice", None, NOW + 60);
    let after = token("alice", Some(NOW + 1), NOW + 60);
    let bob = token("bob", Some(NOW - 10), NOW + 60);
    assert!(policy.authenticate(Some(&before), NOW).is_ok());

    policy.revoke(&"alice".into(), NOW);
    for t in [&before, &no_iat] {
        let e = policy.authenticate(Some(t), NOW).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unauthorized);
        assert!(
            e.message()
                .contains("was disconnected by the application: get a new token"),
            "{}",
            e.message()
        );
    }
    assert!(
        policy.authenticate(Some(&after), NOW + 1).is_ok(),
        "a new token"
    );
    assert!(policy.authenticate(Some(&bob), NOW).is_ok(), "another user");

    // Forgotten once the longest lifetime seen (70 s here) has passed:
    // every token issued before the disconnect has expired by then.
    assert_eq!(policy.revoked_count(), 1);
    policy.revoke(&"carol".into(), NOW + 71);
    assert_eq!(
        policy.revoked_count(),
        1,
        "alice's entry is gone, carol's kept"
    );
}

#[test]
fn a_verified_token_is_remembered_until_it_expires() {
    let policy = Policy::new(Some(hmac()), Namespaces::default());
    let token = mint_hs256(SECRET, &claims("alice"), None).unwrap();
    let first = policy.authenticate(Some(&token), NOW).unwrap();
    let again = policy.authenticate(Some(&token), NOW + 30).unwrap();
    let (Principal::User(a), Principal::User(b)) = (&first, &again) else {
        panic!("users expected")
    };
    assert!(
        Arc::ptr_eq(a, b),
        "the second presentation shares the first's user"
    );
    // At its expiry the remembered token is checked again, and refused.
    let e = policy.authenticate(Some(&token), NOW + 60).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TokenExpired);
    // A token differing in one byte is verified on its own, and fails.
    let mut forged = token.clone().into_bytes();
    let last = forged.len() - 2;
    forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    assert!(policy.authenticate(Some(&forged), NOW).is_err());
    // A disconnect reaches remembered tokens too.
    policy.revoke(&"alice".into(), NOW + 1);
    assert!(policy.authenticate(Some(&token), NOW + 2).is_err());
}

#[test]
fn the_verified_tokens_stay_bounded() {
    let policy = Policy::new(Some(hmac()), Namespaces::default());
    for i in 0..VERIFIED_TOKENS + 10 {
        let token = mint_hs256(SECRET, &claims(&format!("u{i}")), None).unwrap();
        policy.authenticate(Some(&token), NOW).unwrap();
    }
    assert!(policy.verified.lock().unwrap().len() <= VERIFIED_TOKENS);
}

/// Not a test: what one verification costs, for docs/benchmarks.md.
/// `cargo test --release -p pushgate-core --lib verify_cost -- --ignored --nocapture`
#[test]
#[ignore]
fn verify_cost() {
    let rsa_key = EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap();
    let ec_key = EncodingKey::from_ec_pem(EC_PRIVATE).unwrap();
    let cases = [
        (
            "HS256",
            hmac(),
            mint_hs256(SECRET, &claims("u"), None).unwrap(),
        ),
        (
            "RS256",
            Verifier::new(AuthConfig {
                public_key_pem: Some(RSA_PUBLIC.to_vec()),
                ..AuthConfig::default()
            })
            .unwrap(),
            sign(Algorithm::RS256, &rsa_key, &claims("u"), None),
        ),
        (
            "ES256",
            Verifier::new(AuthConfig {
                public_key_pem: Some(EC_PUBLIC.to_vec()),
                ..AuthConfig::default()
            })
            .unwrap(),
            sign(Algorithm::ES256, &ec_key, &claims("u"), None),
        ),
    ];
    for (name, v, token) in cases {
        let n = 2000;
        let t = std::time::Instant::now();
        for _ in 0..n {
            v.verify(&token, NOW).unwrap();
        }
        let per = t.elapsed().as_secs_f64() * 1e6 / n as f64;
        let policy = Policy::new(Some(v), Namespaces::default());
        policy.authenticate(Some(&token), NOW).unwrap();
        let t = std::time::Instant::now();
        for _ in 0..n {
            policy.authenticate(Some(&token), NOW).unwrap();
        }
        let cached = t.elapsed().as_secs_f64() * 1e6 / n as f64;
        eprintln!("{name}: verify {per:.1} µs, remembered {cached:.2} µs");
    }
}
