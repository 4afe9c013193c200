//! What every answer carries and every `/v1` request must pass before the access layer:
//! security headers, a same-origin policy (no cross-origin calls to the API, preflight
//! included; the UI is served by the same server) and request body limits answered in the
//! API's error shape. Per-token rate limits sit in `access::guard`, after authentication.

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState};

/// The largest request body a `/v1` route reads unless it declares more (a backup restore).
pub const DEFAULT_BODY_LIMIT: usize = 1 << 20;

/// The UI is HTML, CSS and JavaScript modules from `/ui/`, calling `/v1` on the same
/// origin: nothing inline, nothing from elsewhere, never framed.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Browsers that have seen the API over HTTPS keep to HTTPS for a year.
const HSTS: &str = "max-age=31536000";

/// The layer around the whole router: refuses cross-origin `/v1` calls and adds the
/// security headers to every answer, refusals included.
pub async fn harden(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let is_api = path == "/v1" || path.starts_with("/v1/");
    let mut res = match is_api.then(|| foreign_origin(&req, state.https)).flatten() {
        Some(origin) => {
            tracing::info!(%origin, method = %req.method(), path, "cross-origin API call refused");
            ApiError::new(
                StatusCode::FORBIDDEN,
                "cross_origin",
                format!(
                    "cross-origin requests to the API are refused (Origin `{origin}`); \
                     use the UI served by this server, or call the API without a browser"
                ),
            )
            .into_response()
        }
        None => next.run(req).await,
    };
    security_headers(res.headers_mut(), state.https);
    res
}

fn security_headers(headers: &mut HeaderMap, https: bool) {
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    // Never a wildcard: a browser may only read answers on this origin.
    headers.remove(header::ACCESS_CONTROL_ALLOW_ORIGIN);
    if https {
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static(HSTS),
        );
    }
}

/// The request's `Origin` when it is not this server's own (`None`: no `Origin`, as from
/// the CLI, or the same origin, as from the UI). `Origin: null` is foreign.
fn foreign_origin(req: &Request, https: bool) -> Option<String> {
    let origin = req.headers().get(header::ORIGIN)?;
    let Ok(origin) = origin.to_str() else {
        return Some(String::from_utf8_lossy(origin.as_bytes()).into_owned());
    };
    let scheme = if https { "https" } else { "http" };
    let host = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        });
    let same =
        host.is_some_and(|host| normalize(origin) == normalize(&format!("{scheme}://{host}")));
    (!same).then(|| origin.to_owned())
}

/// An origin in one spelling: lowercase, without the scheme's default port.
fn normalize(origin: &str) -> String {
    let lower = origin.trim_end_matches('/').to_ascii_lowercase();
    for (scheme, port) in [("http://", ":80"), ("https://", ":443")] {
        if lower.starts_with(scheme)
            && let Some(bare) = lower.strip_suffix(port)
        {
            return bare.to_owned();
        }
    }
    lower
}

/// The route layer of `/v1`: a body declared larger than the route's limit is refused
/// before anything reads it, and the refusal of a streamed body that grows past it (axum's
/// plain-text 413) is given the API's error shape, naming the limit.
pub async fn body_limit(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let limit = req
        .extensions()
        .get::<MatchedPath>()
        .and_then(|p| state.routes.find(req.method(), p.as_str()))
        .map_or(DEFAULT_BODY_LIMIT, |d| d.body_limit);
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return too_large(limit).into_response();
    }
    let res = next.run(req).await;
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if res.status() == StatusCode::PAYLOAD_TOO_LARGE && !is_json {
        return too_large(limit).into_response();
    }
    res
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!("the request body is larger than this route's limit of {limit} bytes"),
    )
}

#[cfg(test)]
mod tests {
    use axum::http::Method;

    use super::*;

    fn request(method: Method, host: &str, origin: Option<&str>) -> Request {
        let mut b = Request::builder()
            .method(method)
            .uri("/v1/jobs")
            .header(header::HOST, host);
        if let Some(o) = origin {
            b = b.header(header::ORIGIN, o);
        }
        b.body(axum::body::Body::empty()).unwrap()
    }

    #[test]
    fn only_the_servers_own_origin_or_none_passes() {
        let host = "10.0.0.1:7480";
        let own = request(Method::POST, host, Some("http://10.0.0.1:7480"));
        assert_eq!(foreign_origin(&own, false), None);
        assert_eq!(
            foreign_origin(&request(Method::GET, host, None), false),
            None
        );
        // Same host, other scheme: another origin.
        assert!(foreign_origin(&own, true).is_some());
        for o in [
            "http://evil.example",
            "http://10.0.0.1:7481",
            "null",
            "http://10.0.0.1:7480.evil.example",
        ] {
            let req = request(Method::OPTIONS, host, Some(o));
            assert_eq!(foreign_origin(&req, false).as_deref(), Some(o));
        }
        // Default ports are the same origin however they are spelled.
        let req = request(Method::GET, "api.example", Some("https://API.example:443"));
        assert_eq!(foreign_origin(&req, true), None);
    }
}
