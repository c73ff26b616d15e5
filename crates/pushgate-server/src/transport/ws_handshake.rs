//! The server side of the RFC 6455 opening handshake (§4.2): every refusal
//! is a clear JSON error.

use http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};
use pushgate_core::{Error, ErrorKind};

use crate::admission::Rejection;
use crate::web::Body;

/// Checks an upgrade request; on success returns the `Sec-WebSocket-Accept` value.
pub fn accept_key(method: &Method, headers: &HeaderMap) -> Result<String, Rejection> {
    let has_token = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
                .unwrap_or(false)
        })
    };
    if method != Method::GET {
        // RFC 9110 §15.5.6: a 405 lists the methods the resource accepts.
        let e = Error::new(
            ErrorKind::MethodNotAllowed,
            "a WebSocket handshake must use GET",
        );
        return Err(Rejection::from(e).with_header(header::ALLOW, "GET"));
    }
    if !has_token(header::UPGRADE, "websocket") || !has_token(header::CONNECTION, "upgrade") {
        let e = Error::bad_request(
            "this endpoint speaks WebSocket: send Upgrade: websocket and Connection: Upgrade",
        );
        return Err(Rejection::from(e)
            .with_status(StatusCode::UPGRADE_REQUIRED)
            .with_header(header::UPGRADE, "websocket"));
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        let e =
            Error::bad_request("unsupported Sec-WebSocket-Version; this server speaks version 13");
        return Err(Rejection::from(e)
            .with_status(StatusCode::UPGRADE_REQUIRED)
            .with_header(header::SEC_WEBSOCKET_VERSION, "13"));
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .map(|k| k.as_bytes())
        .filter(|k| is_valid_key(k))
        .ok_or_else(|| {
            Rejection::from(Error::new(
                ErrorKind::BadRequest,
                "Sec-WebSocket-Key must be 16 random bytes in base64",
            ))
        })?;
    Ok(derive_accept(key))
}

/// §4.2.2: base64(SHA-1(key + the protocol's GUID)).
fn derive_accept(key: &[u8]) -> String {
    use base64::Engine;
    use sha1::{Digest, Sha1};
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

/// A key is the base64 of 16 bytes: 22 characters and `==`.
fn is_valid_key(k: &[u8]) -> bool {
    use base64::Engine;
    k.len() == 24
        && base64::engine::general_purpose::STANDARD
            .decode(k)
            .is_ok_and(|d| d.len() == 16)
}

/// The 101 response completing the handshake, with the agreed extensions.
pub fn switching_protocols(accept: &str, extensions: Option<&str>) -> Response<Body> {
    let mut res = Response::new(Body::empty());
    *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = res.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    if let Ok(v) = HeaderValue::from_str(accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    if let Some(v) = extensions.and_then(|e| HeaderValue::from_str(e).ok()) {
        h.insert(header::SEC_WEBSOCKET_EXTENSIONS, v);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn rfc_example_key() {
        let h = headers(&[
            ("upgrade", "websocket"),
            ("connection", "keep-alive, Upgrade"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ]);
        assert_eq!(
            accept_key(&Method::GET, &h).unwrap(),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn refusals() {
        let ok = [
            ("upgrade", "websocket"),
            ("connection", "Upgrade"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ];
        let status = |pairs: &[(&str, &str)]| {
            accept_key(&Method::GET, &headers(pairs))
                .unwrap_err()
                .into_response()
                .status()
        };
        assert_eq!(status(&ok[1..]), StatusCode::UPGRADE_REQUIRED);
        assert_eq!(
            status(&[ok[0], ok[1], ("sec-websocket-version", "8"), ok[3]]),
            StatusCode::UPGRADE_REQUIRED
        );
        assert_eq!(
            status(&[ok[0], ok[1], ok[2], ("sec-websocket-key", "short")]),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            accept_key(&Method::POST, &headers(&ok))
                .unwrap_err()
                .into_response()
                .status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }
}
