//! Every request runs inside an audit request context: entries written for
//! it name its request id and client address, and the response carries the
//! receipts (entry indexes and the signed checkpoint covering them).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine as _;

use crate::WebState;
use crate::client_addr::ClientAddr;

/// The response header with the audit receipt: `index=3,4; size=5;
/// checkpoint=<base64url of the signed note>`.
pub const RECEIPT_HEADER: &str = "vigil-audit-receipt";
/// The request id, echoed (generated when the client sent none or a bad one).
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// The purpose of use a client declares (HL7 PurposeOfUse code, e.g. TREAT).
pub const PURPOSE_HEADER: &str = "x-purpose-of-use";

fn token(v: Option<&HeaderValue>, max: usize) -> Option<String> {
    v.and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|s| {
            !s.is_empty()
                && s.len() <= max
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        })
        .map(str::to_owned)
}

pub async fn layer(
    State(state): State<WebState>,
    ClientAddr(addr): ClientAddr,
    req: Request,
    next: Next,
) -> Response {
    let _ = &state;
    let request_id =
        token(req.headers().get(REQUEST_ID_HEADER), 64).unwrap_or_else(app::trail::new_request_id);
    let ctx = Arc::new(app::trail::RequestContext {
        request_id: request_id.clone(),
        address: Some(addr.to_string()),
        purpose: token(req.headers().get(PURPOSE_HEADER), 32),
        receipts: std::sync::Mutex::new(Vec::new()),
    });
    let mut resp = app::trail::with_request(Arc::clone(&ctx), next.run(req)).await;
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    let receipts = ctx.receipts.lock().map(|r| r.clone()).unwrap_or_default();
    if let Some(latest) = receipts.iter().max_by_key(|r| r.size) {
        let indexes: Vec<String> = receipts.iter().map(|r| r.index.to_string()).collect();
        let value = format!(
            "index={}; size={}; checkpoint={}",
            indexes.join(","),
            latest.size,
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&latest.checkpoint)
        );
        if let Ok(v) = HeaderValue::from_str(&value) {
            resp.headers_mut().insert(RECEIPT_HEADER, v);
        }
    }
    resp
}
