//! The dashboard at `/admin` (only with `admin` enabled): one page, its
//! script and its style, embedded at compile time, so an operator needs no
//! build step and the page needs no CDN. The files themselves are public;
//! everything they show comes from `/metrics` and the server API, which
//! the page calls with the login it asks for (the API key or an admin
//! token, see `crate::admission`).
//!
//! Every answer carries a Content-Security-Policy that allows scripts,
//! styles and requests from this origin only, with no inline script: a
//! channel or user name shown on the page cannot become code.

use http::{header, HeaderValue, Response, StatusCode};

use crate::web::{text, Body};

const PAGE: &str = include_str!("../assets/admin.html");
const SCRIPT: &str = include_str!("../assets/admin.js");
const STYLE: &str = include_str!("../assets/admin.css");

/// Same-origin scripts, styles and requests only; no inline script, no
/// framing, no plugins, no form posted anywhere (the login form is read by
/// the script). `img-src data:` only for the empty favicon.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// The file at `path`: `/admin`, `/admin/admin.js` or `/admin/admin.css`.
pub fn serve(path: &str) -> Response<Body> {
    let (content_type, body) = match path {
        "/admin/admin.js" => ("text/javascript; charset=utf-8", SCRIPT),
        "/admin/admin.css" => ("text/css; charset=utf-8", STYLE),
        _ => ("text/html; charset=utf-8", PAGE),
    };
    let mut res = text(StatusCode::OK, content_type, body);
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // Revalidate every time: the files change with the server, not their URLs.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_has_no_inline_script_or_style_and_loads_its_own_files() {
        // The CSP forbids inline code: the page must not need any.
        assert!(!PAGE.contains("<script>") && !PAGE.contains("<style"));
        let handler = PAGE.split_whitespace().any(|w| {
            w.strip_prefix("on")
                .and_then(|rest| rest.split_once('='))
                .is_some_and(|(name, _)| name.chars().all(|c| c.is_ascii_lowercase()))
        });
        assert!(!handler, "an inline event handler (onclick=…)");
        assert!(PAGE.contains("src=\"/admin/admin.js\""));
        assert!(PAGE.contains("href=\"/admin/admin.css\""));
        assert!(!PAGE.contains("http://") && !PAGE.contains("https://"));
        assert!(!SCRIPT.contains("http://") && !SCRIPT.contains("https://"));
        for (path, kind) in [
            ("/admin", "text/html"),
            ("/admin/admin.js", "text/javascript"),
            ("/admin/admin.css", "text/css"),
        ] {
            let res = serve(path);
            let h = res.headers();
            assert!(h[header::CONTENT_TYPE].to_str().unwrap().starts_with(kind));
            assert_eq!(h[header::CONTENT_SECURITY_POLICY], CSP);
            assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        }
    }
}
