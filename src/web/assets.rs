//! The page's files, embedded in the binary: no CDN, no build step, nothing fetched from the
//! internet.

use axum::http::header;
use axum::response::IntoResponse;

/// The page refers only to itself (`default-src 'self'`): no inline script runs, so a label
/// that reaches the page as markup could not execute even if it were rendered as HTML.
const CSP: &str = "default-src 'self'; img-src 'self' blob:; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
}

/// `GET /`
pub(super) async fn index() -> impl IntoResponse {
    asset(
        "text/html; charset=utf-8",
        include_str!("assets/index.html"),
    )
}

/// `GET /app.js`
pub(super) async fn script() -> impl IntoResponse {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("assets/app.js"),
    )
}

/// `GET /app.css`
pub(super) async fn style() -> impl IntoResponse {
    asset("text/css; charset=utf-8", include_str!("assets/app.css"))
}

/// `GET /label.js`: the *Label and train* page.
pub(super) async fn label_script() -> impl IntoResponse {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("assets/label.js"),
    )
}
