//! Sign-in, second factors, enrolment, first-run set-up, the account page,
//! password change and reset.

use axum::Router;

use crate::WebState;

pub fn routes() -> Router<WebState> {
    Router::new()
}
