//! The front's request-head parsing (`front::parse_head`, the pure part of
//! `read_head`) and the WebSocket opening handshake
//! (`transport::ws_handshake::accept_key`) on arbitrary bytes.
//!
//! `parse_head` properties: "read more" only for an incomplete head under
//! `MAX_HEAD`; a head the front takes is an HTTP/1.1 GET of `/ws`, `/echo`
//! or a subscribing path without a body, or an HTTP/1.1 POST to a body
//! path with exactly one all-digit `Content-Length` equal to the body
//! length it reports; its `Parts` carry the path the front routed on and
//! every header in order, the same bytes alone give the same answer, and a
//! strict prefix of them asks to read more (or, from `MAX_HEAD` bytes on,
//! goes to hyper).
//!
//! `accept_key` properties: the outcome equals an independent model of RFC
//! 6455 §4.2.1 (405 for a non-GET with `Allow: GET`, 426 without the upgrade
//! tokens or version 13, 400 for a bad key, else base64(SHA-1(key + GUID))),
//! and every refusal is a JSON error body.
#![no_main]

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use libfuzzer_sys::fuzz_target;
use pushgate_server::fuzzing::{
    accept_key, find_route, parse_head, switching_protocols, Body, Front, Head, MAX_HEAD,
};
use sha1::{Digest, Sha1};

fn check_head(buf: &[u8]) {
    let mut raw_headers = [httparse::EMPTY_HEADER; 64];
    let mut raw = httparse::Request::new(&mut raw_headers);
    let status = raw.parse(buf);
    match parse_head(buf) {
        None => {
            assert!(buf.len() < MAX_HEAD);
            assert!(matches!(status, Ok(httparse::Status::Partial)));
        }
        Some(Head::Hyper) => {}
        Some(Head::Ours {
            parts,
            head: len,
            body,
        }) => {
            assert_eq!(status, Ok(httparse::Status::Complete(len)));
            assert!(buf[..len].ends_with(b"\n"));
            assert_eq!(parts.version, http::Version::HTTP_11);
            assert_eq!(raw.version, Some(1));
            let path = parts.uri.path();
            let lengths: Vec<&[u8]> = parts
                .headers
                .get_all(header::CONTENT_LENGTH)
                .iter()
                .map(|v| v.as_bytes())
                .collect();
            let front = find_route(path).map(|r| r.front);
            if parts.method == Method::GET {
                assert_eq!(front, Some(Front::Get), "{path:?}");
                assert_eq!(body, 0);
                // Zero, however written: `0`, `00`, … (RFC 9110 §8.6: 1*DIGIT).
                assert!(lengths
                    .iter()
                    .all(|v| !v.is_empty() && v.iter().all(|b| *b == b'0')));
            } else {
                assert_eq!(parts.method, Method::POST);
                assert_eq!(front, Some(Front::Post), "{path:?}");
                let [length] = lengths[..] else {
                    panic!("{lengths:?}")
                };
                assert!(length.iter().all(u8::is_ascii_digit));
                assert_eq!(
                    std::str::from_utf8(length).unwrap().parse::<usize>(),
                    Ok(body)
                );
            }
            // Handlers see the path the front routed on, and the query.
            // (`http` drops a `#fragment`, as browsers never send one.)
            let target = raw.path.unwrap().split('#').next().unwrap();
            assert_eq!(target.split('?').next(), Some(path));
            assert_eq!(parts.uri.query(), target.split_once('?').map(|(_, q)| q));
            assert!(!parts.headers.contains_key(header::TRANSFER_ENCODING));
            assert!(!parts.headers.contains_key(header::EXPECT));
            // Every header, in order, with its value.
            assert_eq!(parts.headers.len(), raw.headers.len());
            for h in raw.headers.iter() {
                let name = HeaderName::from_bytes(h.name.as_bytes()).unwrap();
                let pos = raw
                    .headers
                    .iter()
                    .filter(|o| o.name.eq_ignore_ascii_case(h.name));
                let got: Vec<&[u8]> = parts
                    .headers
                    .get_all(&name)
                    .iter()
                    .map(|v| v.as_bytes())
                    .collect();
                let want: Vec<&[u8]> = pos.map(|o| o.value).collect();
                assert_eq!(got, want);
            }
            // The head alone gives the same answer; a strict prefix asks for more.
            match parse_head(&buf[..len]) {
                Some(Head::Ours {
                    parts: again,
                    head: len2,
                    body: body2,
                }) => {
                    assert_eq!((len2, body2), (len, body));
                    assert_eq!(again.uri, parts.uri);
                    assert_eq!(again.headers, parts.headers);
                }
                other => panic!("head alone gave {other:?}"),
            }
            let prefix = parse_head(&buf[..len - 1]);
            if len - 1 < MAX_HEAD {
                assert!(prefix.is_none(), "prefix gave {prefix:?}");
            } else {
                assert!(matches!(prefix, Some(Head::Hyper)));
            }
            if parts.method == Method::GET {
                check_handshake(&parts.method, &parts.headers);
            }
        }
    }
}

/// What RFC 6455 §4.2.1 and the server's documented refusals make of a
/// handshake: the `Sec-WebSocket-Accept` value, or the refusal's status.
fn model(method: &Method, headers: &HeaderMap) -> Result<String, StatusCode> {
    if method != Method::GET {
        return Err(StatusCode::METHOD_NOT_ALLOWED);
    }
    let has_token = |name: &str, token: &str| {
        headers.get_all(name).iter().any(|v| {
            let Ok(s) = std::str::from_utf8(v.as_bytes()) else {
                return false;
            };
            // Visible ASCII only (what `to_str` accepts), comma-separated.
            s.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
                && s.split(',').any(|t| {
                    t.trim_matches([' ', '\t', '\r', '\n', '\x0c'])
                        .eq_ignore_ascii_case(token)
                })
        })
    };
    if !has_token("upgrade", "websocket") || !has_token("connection", "upgrade") {
        return Err(StatusCode::UPGRADE_REQUIRED);
    }
    if headers.get("sec-websocket-version").map(|v| v.as_bytes()) != Some(b"13") {
        return Err(StatusCode::UPGRADE_REQUIRED);
    }
    let key = headers.get("sec-websocket-key").map(|v| v.as_bytes());
    let Some(key) =
        key.filter(|k| k.len() == 24 && STANDARD.decode(k).is_ok_and(|d| d.len() == 16))
    else {
        return Err(StatusCode::BAD_REQUEST);
    };
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    Ok(STANDARD.encode(sha.finalize()))
}

fn check_handshake(method: &Method, headers: &HeaderMap) {
    let got = accept_key(method, headers).map_err(|r| r.into_response());
    let want = model(method, headers);
    match (&got, &want) {
        (Ok(accept), Ok(expected)) => {
            assert_eq!(accept, expected);
            let res = switching_protocols(accept, None);
            assert_eq!(res.status(), StatusCode::SWITCHING_PROTOCOLS);
            assert_eq!(res.headers()["sec-websocket-accept"], accept.as_str());
        }
        (Err(res), Err(status)) => {
            assert_eq!(res.status(), *status);
            let h = res.headers();
            assert_eq!(h["content-type"], "application/json");
            match *status {
                StatusCode::METHOD_NOT_ALLOWED => assert_eq!(h["allow"], "GET"),
                StatusCode::UPGRADE_REQUIRED => {
                    assert!(h.contains_key("upgrade") || h["sec-websocket-version"] == "13")
                }
                _ => {}
            }
            let Body::Full(Some(body)) = res.body() else {
                panic!("refusal without a body")
            };
            let v: serde_json::Value = serde_json::from_slice(body).unwrap();
            assert_eq!(v["type"], "error");
            let code = match *status {
                StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
                _ => "bad_request",
            };
            assert_eq!(v["code"], code);
        }
        _ => panic!(
            "accept_key gave {:?}, expected {want:?}",
            got.as_ref().map_err(|r| r.status())
        ),
    }
}

/// Reads the input as lines: the first line's first word is the method,
/// each other line `name:value` (optional whitespace around the value, a
/// trailing CR dropped); lines `http` refuses are skipped. This reaches
/// `accept_key` with header bytes the front would never pass on.
fn check_handshake_lines(data: &[u8]) {
    let mut lines = data.split(|&b| b == b'\n');
    let first = lines.next().unwrap_or_default();
    let word = first.split(|&b| b == b' ').next().unwrap_or_default();
    let Ok(method) = Method::from_bytes(word) else {
        return;
    };
    let mut headers = HeaderMap::new();
    for line in lines {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        let value = value.trim_ascii();
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            headers.append(n, v);
        }
    }
    check_handshake(&method, &headers);
}

fuzz_target!(|data: &[u8]| {
    check_head(data);
    check_handshake_lines(data);
});
