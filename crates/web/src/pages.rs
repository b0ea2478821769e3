//! Health and the browser pages.

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::WebState;

pub fn routes() -> Router<WebState> {
    Router::new()
        .route("/health", get(health))
        .route("/", get(index))
        .route("/static/records.js", get(records_js))
        .route("/static/vigil.css", get(css))
}

async fn health() -> Response {
    let mut r = (StatusCode::OK, "{\"status\":\"ok\"}").into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn asset(body: &'static str, ctype: &'static str) -> Response {
    let mut r = (StatusCode::OK, body).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    r
}

async fn index() -> Response {
    asset(
        include_str!("../assets/index.html"),
        "text/html; charset=utf-8",
    )
}

async fn records_js() -> Response {
    asset(
        include_str!("../assets/records.js"),
        "text/javascript; charset=utf-8",
    )
}

async fn css() -> Response {
    asset(
        include_str!("../assets/vigil.css"),
        "text/css; charset=utf-8",
    )
}
