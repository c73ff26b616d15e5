//! `GET /pushgate.js`: the browser client, `clients/js/pushgate.js`, embedded
//! at compile time so the binary serves the exact version it was built with.

use http::{header, HeaderValue, Response, StatusCode};

use crate::web::{text, Body};

const CLIENT_JS: &str = include_str!("../../../clients/js/pushgate.js");

pub fn serve() -> Response<Body> {
    let mut res = text(StatusCode::OK, "text/javascript; charset=utf-8", CLIENT_JS);
    // Revalidate every time: the file changes with the server, not its URL.
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_the_client_as_uncached_javascript() {
        let res = serve();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(
            res.headers()[header::CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
        assert_eq!(res.headers()[header::CACHE_CONTROL], "no-cache");
        assert!(CLIENT_JS.contains("export class Pushgate"));
    }
}
