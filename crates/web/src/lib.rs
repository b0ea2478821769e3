//! HTTP: the FHIR REST API, health, pages, errors as `OperationOutcome`,
//! security headers and request limits.
//!
//! Architecture Invariant: this is the only crate that knows HTTP. It turns
//! requests into calls on `app::Vigil` and results into responses; it never
//! touches the store or keys.

mod access_pages;
mod access_routes;
mod admin_pages;
pub mod audit_context;
mod audit_routes;
mod capability;
pub mod client_addr;
mod consult_pages;
mod fhir_routes;
pub mod html;
mod identity_pages;
mod monitor_pages;
mod oauth_routes;
mod pages;
mod session;

use std::sync::Arc;

use axum::Router;
use axum::extract::MatchedPath;
use axum::http::{HeaderName, HeaderValue, Request};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;

pub use client_addr::{ClientAddr, TrustedProxies};
pub use fhir_routes::{FHIR_JSON, PathRoutes, ROUTES};

/// Everything a handler needs.
#[derive(Clone)]
pub struct WebState {
    pub vigil: Arc<app::Vigil>,
    /// The public base URL of the FHIR API (e.g. `https://vigil.example/fhir`).
    /// When `None`, it is derived from the request's `Host` header.
    pub public_base: Option<String>,
    /// Reverse proxies whose forwarding header names the client (`ClientAddr`).
    pub proxies: Arc<client_addr::TrustedProxies>,
}

impl axum::extract::FromRef<WebState> for Arc<client_addr::TrustedProxies> {
    fn from_ref(state: &WebState) -> Self {
        Arc::clone(&state.proxies)
    }
}

/// The whole HTTP surface. Tests drive it with `oneshot`, no sockets.
pub fn router(state: WebState) -> Router {
    let trace = TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
        // Log the matched route, never the raw URI: query strings can hold PHI.
        let route = req
            .extensions()
            .get::<MatchedPath>()
            .map(MatchedPath::as_str)
            .unwrap_or("unmatched");
        tracing::info_span!("http", method = %req.method(), route = %route)
    });
    Router::new()
        .merge(fhir_routes::routes())
        .merge(pages::routes())
        .merge(identity_pages::routes())
        .merge(admin_pages::routes())
        .merge(oauth_routes::routes())
        .merge(audit_routes::routes())
        .merge(access_pages::routes())
        .merge(access_routes::routes())
        .merge(monitor_pages::routes())
        .merge(consult_pages::routes())
        .fallback(fhir_routes::not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            audit_context::layer,
        ))
        .with_state(state)
        .layer(trace)
        .layer(header("x-content-type-options", "nosniff"))
        .layer(header("x-frame-options", "DENY"))
        // Same-origin only: our own pages keep their Origin header on form posts
        // (checked by the sign-in forms); nothing leaks to other sites.
        .layer(header("referrer-policy", "same-origin"))
        .layer(header("cache-control", "no-store"))
        .layer(header(
            "content-security-policy",
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ))
}

fn header(name: &'static str, value: &'static str) -> SetResponseHeaderLayer<HeaderValue> {
    SetResponseHeaderLayer::if_not_present(
        HeaderName::from_static(name),
        HeaderValue::from_static(value),
    )
}
