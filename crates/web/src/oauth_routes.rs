//! The OAuth 2 / SMART App Launch endpoints and the consent screen.

use axum::Router;

use crate::WebState;

pub fn routes() -> Router<WebState> {
    Router::new()
}
