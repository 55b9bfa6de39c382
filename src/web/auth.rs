//! Who may use the web page: credentials (a token, or users from a password file) and the
//! same-origin check on requests that change state.
//!
//! With credentials configured every request needs them except the health probes; without
//! them (loopback, or `allow_unauthenticated`) reading and writing are open, but writes must
//! still come from the page itself, not from another site a browser has open (CSRF). A page
//! listening on loopback answers only to loopback host names, so a web site whose name an
//! attacker re-points at 127.0.0.1 (DNS rebinding) cannot read it through the visitor's browser.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::prelude::{Engine, BASE64_STANDARD};

use super::config::{read_password_file, WebConfig};
use super::WebError;

/// What the guard checks: the credentials, and whether only loopback host names are served.
#[derive(Debug)]
pub(super) struct Access {
    credentials: Credentials,
    loopback: bool,
}

impl Access {
    /// The access rules of `config`.
    pub(super) fn load(config: &WebConfig) -> Result<Self, WebError> {
        Ok(Self {
            credentials: Credentials::load(config)?,
            loopback: config.listen.ip().is_loopback(),
        })
    }
}

/// The accepted credentials.
#[derive(Debug, Clone, Default)]
pub(super) struct Credentials {
    token: Option<String>,
    users: Vec<(String, String)>,
}

impl Credentials {
    /// The token and the password file's users of `config`.
    pub(super) fn load(config: &WebConfig) -> Result<Self, WebError> {
        let users = match &config.password_file {
            Some(file) => read_password_file(file)?,
            None => Vec::new(),
        };
        Ok(Self {
            token: config.token.clone(),
            users,
        })
    }

    fn required(&self) -> bool {
        self.token.is_some() || !self.users.is_empty()
    }

    /// Whether `headers` carry a valid `Authorization`: Bearer with the token, or Basic with
    /// a user's password or (any user) the token.
    fn accept(&self, headers: &HeaderMap) -> bool {
        let Some(value) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        if let Some(token) = value.strip_prefix("Bearer ") {
            return self
                .token
                .as_deref()
                .is_some_and(|t| same(t.as_bytes(), token.trim().as_bytes()));
        }
        let Some((user, password)) = value
            .strip_prefix("Basic ")
            .and_then(|encoded| BASE64_STANDARD.decode(encoded.trim()).ok())
            .and_then(|decoded| String::from_utf8(decoded).ok())
            .and_then(|pair| {
                pair.split_once(':')
                    .map(|(u, p)| (u.to_string(), p.to_string()))
            })
        else {
            return false;
        };
        let token_ok = self
            .token
            .as_deref()
            .is_some_and(|t| same(t.as_bytes(), password.as_bytes()));
        // Every user is compared, so the time taken does not tell which exist.
        let user_ok = self.users.iter().fold(false, |ok, (u, p)| {
            let this =
                same(u.as_bytes(), user.as_bytes()) & same(p.as_bytes(), password.as_bytes());
            ok | this
        });
        token_ok || user_ok
    }
}

/// Compares without stopping at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// Whether the `Host` header names this machine's loopback (`localhost`, `127.x.y.z`, `[::1]`,
/// any port). A request without one cannot come from a browser and passes.
fn loopback_host(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST) else {
        return true;
    };
    let Ok(host) = host.to_str() else {
        return false;
    };
    let name = match host.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or(bracketed),
        None => host.rsplit_once(':').map_or(host, |(name, _port)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Paths anyone may ask: the health probes.
fn is_probe(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz")
}

/// Whether a request that changes state comes from this site: its `Origin` (or, without one,
/// `Referer`) names the host it was sent to, and the browser does not call it cross-site.
/// Clients that are not browsers send neither and are let through (they carry credentials
/// where any are needed; CSRF is a browser's problem).
fn same_origin(headers: &HeaderMap) -> bool {
    let text = |name| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = text(header::HeaderName::from_static("sec-fetch-site")) {
        if !matches!(site, "same-origin" | "none") {
            return false;
        }
    }
    let Some(source) = text(header::ORIGIN).or_else(|| text(header::REFERER)) else {
        return true;
    };
    let Some(host) = text(header::HOST) else {
        return false;
    };
    let authority = source
        .strip_prefix("http://")
        .or_else(|| source.strip_prefix("https://"))
        .map(|rest| rest.split('/').next().unwrap_or(rest));
    authority.is_some_and(|a| a.eq_ignore_ascii_case(host))
}

/// The middleware: the host name on loopback, credentials, then the same-origin check for
/// anything but GET and HEAD.
pub(super) async fn guard(
    State(access): State<std::sync::Arc<Access>>,
    request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    if access.loopback && !loopback_host(headers) {
        return (
            StatusCode::FORBIDDEN,
            "this page listens on loopback and answers only to a loopback host name \
             (http://127.0.0.1:PORT/ or http://localhost:PORT/)\n",
        )
            .into_response();
    }
    let credentials = &access.credentials;
    if credentials.required() && !is_probe(request.uri().path()) && !credentials.accept(headers) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic realm=\"edgeclass\"")],
            "credentials required\n",
        )
            .into_response();
    }
    let changes_state = !matches!(*request.method(), Method::GET | Method::HEAD);
    if changes_state && !same_origin(headers) {
        return (
            StatusCode::FORBIDDEN,
            "cross-site request refused (Origin does not match Host)\n",
        )
            .into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn basic_and_bearer_credentials_are_checked() {
        let credentials = Credentials {
            token: Some("t0ken".into()),
            users: vec![("ana".into(), "s3cret".into())],
        };
        // "ana:s3cret", "x:t0ken", "ana:wrong"
        for (value, ok) in [
            ("Basic YW5hOnMzY3JldA==", true),
            ("Basic eDp0MHRrZW4=", false),
            ("Basic eDp0MGtlbg==", true),
            ("Basic YW5hOndyb25n", false),
            ("Bearer t0ken", true),
            ("Bearer t0ke", false),
            ("Basic !!!", false),
        ] {
            assert_eq!(
                credentials.accept(&headers(&[("authorization", value)])),
                ok,
                "{value}"
            );
        }
        assert!(!credentials.accept(&HeaderMap::new()));
    }

    #[test]
    fn only_loopback_host_names_count_as_loopback() {
        for (host, ok) in [
            ("127.0.0.1:8080", true),
            ("127.1.2.3", true),
            ("localhost:8080", true),
            ("LOCALHOST", true),
            ("[::1]:8080", true),
            ("[::1]", true),
            ("evil.example:8080", false),
            ("127.0.0.1.evil.example", false),
            ("192.168.1.5:8080", false),
            ("[2001:db8::1]:8080", false),
        ] {
            assert_eq!(loopback_host(&headers(&[("host", host)])), ok, "{host}");
        }
        assert!(loopback_host(&HeaderMap::new()));
    }

    #[test]
    fn only_same_origin_writes_pass() {
        let host = ("host", "pi.local:8080");
        assert!(same_origin(&headers(&[host])));
        assert!(same_origin(&headers(&[
            host,
            ("origin", "http://pi.local:8080")
        ])));
        assert!(same_origin(&headers(&[
            host,
            ("referer", "http://pi.local:8080/#classify")
        ])));
        assert!(!same_origin(&headers(&[
            host,
            ("origin", "http://evil.example")
        ])));
        assert!(!same_origin(&headers(&[host, ("origin", "null")])));
        assert!(!same_origin(&headers(&[
            host,
            ("sec-fetch-site", "cross-site")
        ])));
        assert!(!same_origin(&headers(&[
            host,
            ("origin", "http://pi.local:8080.evil.example")
        ])));
    }
}
