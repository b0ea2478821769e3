//! The identity pages: sign-in with second factors, sessions, CSRF, set-up,
//! enrolment links and password reset, driven through the router.

use app::{NewAccount, Principal};
use auth::totp::{TotpConfig, TotpSecret};
use axum::http::StatusCode;
use serde_json::json;
use store::Role;

use crate::{Resp, T, setup};

const SESSION: &str = "__Host-vigil_session";
const PENDING: &str = "__Host-vigil_pending";
const PASSWORD: &str = "quiet lantern over harbour 48";

fn text(r: &Resp) -> String {
    match &r.body {
        serde_json::Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

fn location(r: &Resp) -> String {
    r.headers
        .get("location")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// The value a response sets for cookie `name` (`Some("")` when cleared).
fn set_cookie(r: &Resp, name: &str) -> Option<String> {
    r.headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next()?.split_once('='))
        .filter(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
        .next_back()
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn form_body(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn cookie_header(cookies: &[(&str, &str)]) -> String {
    cookies
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("; ")
}

async fn post_form(t: &T, uri: &str, fields: &[(&str, &str)], cookies: &[(&str, &str)]) -> Resp {
    let c = cookie_header(cookies);
    let mut h = vec![("content-type", "application/x-www-form-urlencoded")];
    if !c.is_empty() {
        h.push(("cookie", c.as_str()));
    }
    t.call("POST", uri, Some(form_body(fields).into_bytes()), &h, false)
        .await
}

async fn get_page(t: &T, uri: &str, cookies: &[(&str, &str)]) -> Resp {
    let c = cookie_header(cookies);
    let h: Vec<(&str, &str)> = if c.is_empty() {
        vec![]
    } else {
        vec![("cookie", c.as_str())]
    };
    t.call("GET", uri, None, &h, false).await
}

async fn post_json(t: &T, uri: &str, body: &serde_json::Value) -> Resp {
    t.call(
        "POST",
        uri,
        Some(serde_json::to_vec(body).unwrap()),
        &[("content-type", "application/json")],
        false,
    )
    .await
}

async fn create(
    t: &T,
    username: &str,
    email: Option<&str>,
    password: Option<&str>,
) -> store::AccountId {
    t.vigil
        .create_account(
            &Principal::Operator,
            NewAccount {
                username: username.into(),
                role: Role::Physician,
                practitioner: None,
                patient: None,
                display_name: Some("Dana Example".into()),
                email: email.map(str::to_owned),
            },
            password,
        )
        .await
        .unwrap()
}

/// The text between `start` and the next `end` after it.
fn between<'a>(s: &'a str, start: &str, end: &str) -> &'a str {
    let i = s
        .find(start)
        .unwrap_or_else(|| panic!("{start} not in page: {s}"))
        + start.len();
    let rest = &s[i..];
    &rest[..rest.find(end).unwrap()]
}

fn base32_decode(s: &str) -> TotpSecret {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let (mut buf, mut bits, mut out) = (0u32, 0u32, Vec::new());
    for c in s.bytes().filter(|c| !c.is_ascii_whitespace()) {
        let v = ALPHABET.iter().position(|a| *a == c).unwrap() as u32;
        buf = (buf << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
            buf &= (1 << bits) - 1;
        }
    }
    TotpSecret::from_bytes(out.try_into().unwrap())
}

fn now_step() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    TotpConfig::default().step(now)
}

fn code_at(secret: &TotpSecret, step: u64) -> String {
    TotpConfig::default()
        .code_at_step(secret, step)
        .unwrap()
        .to_string()
}

/// Signs in a physician who must enrol a factor, enrols TOTP through the
/// pages, and finishes with a session. Returns (secret, accepted step, cookie).
async fn enrol_totp(t: &T, username: &str) -> (TotpSecret, u64, String) {
    let r = post_form(
        t,
        "/signin",
        &[
            ("username", username),
            ("password", PASSWORD),
            ("next", "/account"),
        ],
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", text(&r));
    assert_eq!(location(&r), "/signin/enrol");
    let pending = set_cookie(&r, PENDING).unwrap();
    let page = get_page(t, "/signin/enrol", &[(PENDING, &pending)]).await;
    assert_eq!(page.status, StatusCode::OK);
    let page = text(&page);
    assert!(page.contains("id=\"totp-uri\""));
    assert!(
        page.contains("id=\"totp-qr\"") && page.contains("src=\"data:image/svg+xml;base64,"),
        "the key is also shown as a QR code"
    );
    let secret = base32_decode(between(&page, "id=\"totp-secret\" class=\"secret\">", "<"));
    let ceremony = between(&page, "name=\"ceremony\" value=\"", "\"").to_owned();
    let step = now_step();
    let code = code_at(&secret, step);
    let r = post_form(
        t,
        "/signin/enrol/totp",
        &[("ceremony", &ceremony), ("code", &code)],
        &[(PENDING, &pending)],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", text(&r));
    let codes = text(&r);
    assert!(codes.contains("id=\"recovery-codes\""), "{codes}");
    let r = post_form(t, "/signin/enrol/done", &[], &[(PENDING, &pending)]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", text(&r));
    assert_eq!(location(&r), "/account");
    assert_eq!(set_cookie(&r, PENDING).as_deref(), Some(""));
    (secret, step, set_cookie(&r, SESSION).unwrap())
}

/// Password, then the factor page; returns the pending cookie.
async fn to_factor(t: &T, username: &str, password: &str) -> String {
    let r = post_form(
        t,
        "/signin",
        &[("username", username), ("password", password)],
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", text(&r));
    assert_eq!(location(&r), "/signin/factor");
    set_cookie(&r, PENDING).unwrap()
}

async fn csrf_of(t: &T, session: &str) -> String {
    t.vigil.session(session).await.unwrap().csrf
}

#[tokio::test]
async fn sign_in_refuses_unknown_users_and_wrong_passwords_alike() {
    let t = setup().await;
    create(&t, "dana", None, Some(PASSWORD)).await;
    let page = get_page(&t, "/signin?next=/account", &[]).await;
    assert_eq!(page.status, StatusCode::OK);
    let html = text(&page);
    for id in [
        "signin-form",
        "username",
        "password",
        "show-password",
        "signin-submit",
        "passkey-signin",
        "forgot-link",
    ] {
        assert!(html.contains(&format!("id=\"{id}\"")), "{id} missing");
    }
    assert!(!html.contains("<script>"), "no inline scripts");
    assert!(!html.contains("href=\"/setup\""), "an administrator exists");
    first_run(&t).await;
    let html = text(&get_page(&t, "/signin", &[]).await);
    assert!(
        html.contains("href=\"/setup\""),
        "no administrator yet: set-up is offered"
    );

    let wrong = post_form(
        &t,
        "/signin",
        &[
            ("username", "dana"),
            ("password", "not the password at all"),
        ],
        &[],
    )
    .await;
    let unknown = post_form(
        &t,
        "/signin",
        &[("username", "nobody"), ("password", PASSWORD)],
        &[],
    )
    .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
    let msg = |r: &Resp| between(&text(r), "role=\"alert\">", "<").to_owned();
    assert_eq!(msg(&wrong), msg(&unknown));
    assert!(set_cookie(&wrong, SESSION).is_none());

    // A foreign origin is refused before any password work.
    let r = t
        .call(
            "POST",
            "/signin",
            Some(form_body(&[("username", "dana"), ("password", PASSWORD)]).into_bytes()),
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("origin", "https://evil.example"),
            ],
            false,
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn second_factor_sign_in_makes_a_fresh_session_and_refuses_replayed_codes() {
    let t = setup().await;
    create(&t, "dana", None, Some(PASSWORD)).await;
    let (secret, step, first) = enrol_totp(&t, "dana").await;
    let account = get_page(&t, "/account", &[(SESSION, &first)]).await;
    assert_eq!(account.status, StatusCode::OK);
    assert!(text(&account).contains("id=\"account-username\">dana<"));

    // Fixation: a cookie the browser brings is never the one it leaves with.
    let planted = "planted-session-value";
    let r = post_form(
        &t,
        "/signin",
        &[
            ("username", "dana"),
            ("password", PASSWORD),
            ("next", "/Patient"),
        ],
        &[(SESSION, planted)],
    )
    .await;
    assert_eq!(location(&r), "/signin/factor");
    assert_ne!(set_cookie(&r, SESSION).as_deref(), Some(planted));
    let pending = set_cookie(&r, PENDING).unwrap();
    let next = set_cookie(&r, "__Host-vigil_next").unwrap();
    let page = get_page(&t, "/signin/factor", &[(PENDING, &pending)]).await;
    assert!(text(&page).contains("id=\"totp-form\""));
    assert!(text(&page).contains("id=\"recovery-form\""));

    // The enrolment code was used: it cannot sign in again.
    let replay = post_form(
        &t,
        "/signin/totp",
        &[("code", &code_at(&secret, step))],
        &[(PENDING, &pending), ("__Host-vigil_next", &next)],
    )
    .await;
    assert_eq!(replay.status, StatusCode::UNAUTHORIZED);
    assert!(text(&replay).contains("already used"), "{}", text(&replay));

    let fresh = code_at(&secret, step + 1);
    let r = post_form(
        &t,
        "/signin/totp",
        &[("code", &fresh)],
        &[
            (PENDING, &pending),
            ("__Host-vigil_next", &next),
            (SESSION, planted),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", text(&r));
    assert_eq!(location(&r), "/Patient");
    let session = set_cookie(&r, SESSION).unwrap();
    assert_ne!(session, planted);
    assert_ne!(session, first);
    assert_eq!(
        get_page(&t, "/account", &[(SESSION, &session)])
            .await
            .status,
        StatusCode::OK
    );

    // The pending step is over, and the same code again is a replay.
    let again = post_form(
        &t,
        "/signin/totp",
        &[("code", &fresh)],
        &[(PENDING, &pending)],
    )
    .await;
    assert_eq!(again.status, StatusCode::SEE_OTHER);
    assert_eq!(location(&again), "/signin");
    let pending = to_factor(&t, "dana", PASSWORD).await;
    let r = post_form(
        &t,
        "/signin/totp",
        &[("code", &fresh)],
        &[(PENDING, &pending)],
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    // Signed in already: the sign-in page sends the user on.
    let r = get_page(&t, "/signin", &[(SESSION, &session)]).await;
    assert_eq!(location(&r), "/account");
}

#[tokio::test]
async fn sign_out_needs_the_csrf_token() {
    let t = setup().await;
    create(&t, "dana", None, Some(PASSWORD)).await;
    let (_, _, session) = enrol_totp(&t, "dana").await;
    let r = post_form(&t, "/signout", &[], &[(SESSION, &session)]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(text(&r).contains("This form has expired"));
    let r = post_form(
        &t,
        "/signout",
        &[("csrf", "forged")],
        &[(SESSION, &session)],
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(
        get_page(&t, "/account", &[(SESSION, &session)])
            .await
            .status,
        StatusCode::OK
    );

    let csrf = csrf_of(&t, &session).await;
    let r = post_form(&t, "/signout", &[("csrf", &csrf)], &[(SESSION, &session)]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(location(&r), "/signin");
    assert_eq!(set_cookie(&r, SESSION).as_deref(), Some(""));
    let r = get_page(&t, "/account", &[(SESSION, &session)]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(location(&r).starts_with("/signin?"), "{}", location(&r));
}

#[tokio::test]
async fn account_pages_need_a_session() {
    let t = setup().await;
    let r = get_page(&t, "/account", &[]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(location(&r), "/signin?next=%2Faccount");
    let r = get_page(&t, "/account/passkeys", &[(SESSION, "garbage")]).await;
    assert_eq!(location(&r), "/signin?next=%2Faccount%2Fpasskeys");
    let r = get_page(&t, "/signin/factor", &[]).await;
    assert_eq!(location(&r), "/signin");
    let r = get_page(&t, "/deactivated", &[]).await;
    assert!(text(&r).contains("id=\"deactivated\""));
    let r = get_page(&t, "/static/account.js", &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = get_page(&t, "/static/passkey.js", &[]).await;
    assert!(text(&r).contains("vigilPasskey"));
}

#[tokio::test]
async fn account_page_regenerates_codes_and_changes_the_password() {
    let t = setup().await;
    create(&t, "dana", None, Some(PASSWORD)).await;
    let (_, _, session) = enrol_totp(&t, "dana").await;
    let csrf = csrf_of(&t, &session).await;
    let r = post_form(
        &t,
        "/account/recovery-codes",
        &[("csrf", &csrf)],
        &[(SESSION, &session)],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(text(&r).contains("id=\"recovery-codes\""));
    let page = get_page(&t, "/account/totp", &[(SESSION, &session)]).await;
    assert!(text(&page).contains("id=\"totp-enrol-form\""));

    let r = post_form(
        &t,
        "/account/password",
        &[
            ("csrf", &csrf),
            ("current_password", "wrong one entirely"),
            ("new_password", "a brand new passphrase 77"),
        ],
        &[(SESSION, &session)],
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = post_form(
        &t,
        "/account/password",
        &[
            ("csrf", &csrf),
            ("current_password", PASSWORD),
            ("new_password", "short"),
        ],
        &[(SESSION, &session)],
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(text(&r).contains("at least"));
    let r = post_form(
        &t,
        "/account/password",
        &[
            ("csrf", &csrf),
            ("current_password", PASSWORD),
            ("new_password", "a brand new passphrase 77"),
        ],
        &[(SESSION, &session)],
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", text(&r));
    assert_eq!(location(&r), "/signin?changed=1");
    assert_eq!(
        get_page(&t, "/account", &[(SESSION, &session)])
            .await
            .status,
        StatusCode::SEE_OTHER
    );
    to_factor(&t, "dana", "a brand new passphrase 77").await;
}

#[tokio::test]
async fn password_check_gives_the_policy_reasons() {
    let t = setup().await;
    let r = post_json(&t, "/password/check", &json!({"password": "short"})).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["ok"], false);
    assert!(r.body["reason"].as_str().unwrap().contains("at least"));
    assert_eq!(r.body["length"], 5);
    assert!(r.body["min"].as_u64().unwrap() >= 8);
    let r = post_json(
        &t,
        "/password/check",
        &json!({"password": "dana-the-great-1234567", "username": "dana-the-great"}),
    )
    .await;
    assert_eq!(r.body["ok"], false);
    assert!(
        r.body["reason"].as_str().unwrap().contains("user name"),
        "{}",
        r.body
    );
    let r = post_json(
        &t,
        "/password/check",
        &json!({"password": PASSWORD, "role": "patient"}),
    )
    .await;
    assert_eq!(r.body["ok"], true);
    assert!(r.body["reason"].is_null());
    let r = post_json(
        &t,
        "/password/check",
        &json!({"password": "x", "role": "emperor"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let big = json!({"password": "x".repeat(5000)});
    assert_eq!(
        post_json(&t, "/password/check", &big).await.status,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    let r = t
        .call(
            "POST",
            "/password/check",
            Some(b"password=x".to_vec()),
            &[("content-type", "application/x-www-form-urlencoded")],
            false,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

/// A server with no active administrator yet; returns its bootstrap token.
async fn first_run(t: &T) -> String {
    let admin = t.vigil.account_by_username("it-admin").await.unwrap();
    t.vigil
        .deactivate_account(&Principal::Operator, &admin.id)
        .await
        .unwrap();
    let token = crypto::random_token();
    t.vigil.init_bootstrap_token(Some(&token)).await.unwrap();
    token
}

async fn setup_post(t: &T, token: &str) -> Resp {
    post_form(
        t,
        "/setup",
        &[
            ("bootstrap_token", token),
            ("username", "root-admin"),
            ("display_name", "Robin Admin"),
            ("email", "robin@example.org"),
            ("new_password", PASSWORD),
        ],
        &[],
    )
    .await
}

#[tokio::test]
async fn set_up_works_once() {
    let t = setup().await;
    let token = first_run(&t).await;
    let page = get_page(&t, "/setup", &[]).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(text(&page).contains("id=\"setup-form\""));
    let r = setup_post(&t, "not-the-token-at-all").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = setup_post(&t, &token).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", text(&r));
    assert_eq!(location(&r), "/signin/enrol");
    assert!(set_cookie(&r, PENDING).is_some());
    assert_eq!(
        get_page(&t, "/setup", &[]).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(setup_post(&t, &token).await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn enrolment_links_set_a_password_once() {
    let t = setup().await;
    let id = create(&t, "casey", Some("casey@example.org"), None).await;
    t.vigil
        .send_enrolment(&Principal::Operator, &id, "http://vigil.test")
        .await
        .unwrap();
    let mail = t.vigil.outbox(&Principal::Operator, 10).await.unwrap();
    let body = &mail.iter().find(|m| m.kind == "enrolment").unwrap().body;
    let path = format!("/enrol/{}", between(body, "http://vigil.test/enrol/", "\n"));
    let page = get_page(&t, &path, &[]).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(text(&page).contains("id=\"enrol-username\">casey<"));
    let r = post_form(&t, &path, &[("new_password", "short")], &[]).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = post_form(&t, &path, &[("new_password", PASSWORD)], &[]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", text(&r));
    assert_eq!(location(&r), "/signin/enrol");
    assert_eq!(get_page(&t, &path, &[]).await.status, StatusCode::GONE);
    assert_eq!(
        get_page(&t, "/enrol/made-up-token", &[]).await.status,
        StatusCode::GONE
    );
}

#[tokio::test]
async fn password_reset_goes_through_the_outbox_and_the_second_factor() {
    let t = setup().await;
    create(&t, "dana", Some("dana@example.org"), Some(PASSWORD)).await;
    let (secret, step, session) = enrol_totp(&t, "dana").await;
    let r = post_form(&t, "/forgot", &[("username", "dana")], &[]).await;
    assert!(text(&r).contains("id=\"forgot-sent\""));
    let unknown = post_form(&t, "/forgot", &[("username", "nobody")], &[]).await;
    assert_eq!(text(&r), text(&unknown));
    let mail = t.vigil.outbox(&Principal::Operator, 10).await.unwrap();
    let body = &mail
        .iter()
        .find(|m| m.kind == "password-reset")
        .unwrap()
        .body;
    let path = format!("/reset/{}", between(body, "http://vigil.test/reset/", "\n"));
    let page = get_page(&t, &path, &[]).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(text(&page).contains("id=\"reset-form\""));
    assert!(text(&page).contains("id=\"code\""));
    let new = "another long passphrase 2024";
    let r = post_form(&t, &path, &[("code", "000000"), ("new_password", new)], &[]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", text(&r));
    let r = post_form(
        &t,
        &path,
        &[("code", &code_at(&secret, step + 1)), ("new_password", new)],
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", text(&r));
    assert!(text(&r).contains("id=\"reset-done\""));
    assert_eq!(get_page(&t, &path, &[]).await.status, StatusCode::GONE);
    // Every session was signed out; the new password works.
    assert_eq!(
        get_page(&t, "/account", &[(SESSION, &session)])
            .await
            .status,
        StatusCode::SEE_OTHER
    );
    to_factor(&t, "dana", new).await;
}
