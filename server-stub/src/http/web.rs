//! The Web App: plain HTML, CSS and JavaScript from `server-stub/web/`, embedded in the binary and
//! served on the same listener as the APIs. The sign-in page is `/`, the app `/app/`; both call
//! `/api/v1` with the session cookie (and the CSRF token on writes), so the browser sees nothing
//! the API does not enforce.
//!
//! Every page is sent with a Content Security Policy of `'self'` (no inline script or style, no
//! other origin, no framing), `nosniff`, and no referrer.

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

use super::Shared;

/// The policy every Web App answer carries.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

const INDEX_HTML: &str = include_str!("../../web/index.html");
const APP_HTML: &str = include_str!("../../web/app.html");
const APP_JS: &str = include_str!("../../web/app.js");
const SIGNIN_JS: &str = include_str!("../../web/signin.js");
const APP_CSS: &str = include_str!("../../web/app.css");

/// The Web App's routes.
pub fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route(
            "/",
            get(|| async { page(INDEX_HTML, "text/html; charset=utf-8") }),
        )
        .route("/app", get(|| async { Redirect::permanent("/app/") }))
        .route(
            "/app/",
            get(|| async { page(APP_HTML, "text/html; charset=utf-8") }),
        )
        .route(
            "/app/app.js",
            get(|| async { page(APP_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/app/signin.js",
            get(|| async { page(SIGNIN_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/app/app.css",
            get(|| async { page(APP_CSS, "text/css; charset=utf-8") }),
        )
}

fn page(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    // nosniff and HSTS come with every answer (crate::http::router).
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // The files change with the binary: a browser asks again rather than keep an old copy.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_load_only_their_own_files_and_no_inline_script() {
        for html in [INDEX_HTML, APP_HTML] {
            // Every script element loads a file of the app.
            for (at, _) in html.match_indices("<script") {
                let tag = &html[at..at + html[at..].find('>').unwrap()];
                assert!(tag.contains(" src=\"/app/"), "inline script: {tag}");
            }
            assert!(!html.contains(" style="), "inline style");
            // An attribute such as onclick="...".
            let handler = html.match_indices(" on").any(|(at, _)| {
                let rest = &html[at + 3..];
                let name = rest.len()
                    - rest
                        .trim_start_matches(|c: char| c.is_ascii_lowercase())
                        .len();
                name > 0 && rest[name..].starts_with('=')
            });
            assert!(!handler, "inline event handler");
            assert!(!html.contains("http://") && !html.contains("https://"));
        }
        for script in [APP_JS, SIGNIN_JS] {
            assert!(!script.contains("innerHTML"), "markup from strings");
            assert!(!script.contains("eval("));
        }
    }
}
