//! Administrators' pages: users, OAuth apps, the outbox.

use axum::Router;

use crate::WebState;

pub fn routes() -> Router<WebState> {
    Router::new()
}
