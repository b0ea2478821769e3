//! Client assertions (`private_key_jwt`) against adversarial inputs, and id_tokens checked
//! against their own published JWK Set.

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use auth::assertion::{self, AssertionError, MAX_ASSERTION_LIFETIME_SECS};
use auth::idtoken::{self, IdTokenClaims, IdTokenKey};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use p384::pkcs8::EncodePrivateKey;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};

const CLIENT: &str = "backend-1";
const TOKEN_URL: &str = "https://vigil.example/auth/token";
const NOW: u64 = 1_700_000_000;
const RSA_2048: &[u8] = include_bytes!("../data/rsa2048.pkcs1.der");
const RSA_1024: &[u8] = include_bytes!("../data/rsa1024.pkcs1.der");

fn rsa_jwk(der: &[u8], kid: &str) -> Value {
    let key = rsa::RsaPrivateKey::from_pkcs1_der(der).unwrap();
    json!({
        "kty": "RSA",
        "kid": kid,
        "alg": "RS384",
        "use": "sig",
        "n": URL_SAFE_NO_PAD.encode(key.n().to_bytes_be()),
        "e": URL_SAFE_NO_PAD.encode(key.e().to_bytes_be()),
    })
}

struct EcKey {
    der: Vec<u8>,
    jwk: Value,
}

fn ec_key(seed: u64, kid: &str) -> EcKey {
    let secret = p384::SecretKey::random(&mut StdRng::seed_from_u64(seed));
    let point =
        p384::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(&secret.public_key(), false);
    EcKey {
        der: secret.to_pkcs8_der().unwrap().as_bytes().to_vec(),
        jwk: json!({
            "kty": "EC",
            "crv": "P-384",
            "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(point.x().unwrap()),
            "y": URL_SAFE_NO_PAD.encode(point.y().unwrap()),
        }),
    }
}

fn claims() -> Value {
    json!({
        "iss": CLIENT,
        "sub": CLIENT,
        "aud": TOKEN_URL,
        "exp": NOW + 240,
        "jti": "7f1c0e2a",
    })
}

fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value, key: &EncodingKey) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

fn rs384(kid: Option<&str>, claims: &Value) -> String {
    sign(
        Algorithm::RS384,
        kid,
        claims,
        &EncodingKey::from_rsa_der(RSA_2048),
    )
}

fn es384(key: &EcKey, kid: Option<&str>, claims: &Value) -> String {
    sign(
        Algorithm::ES384,
        kid,
        claims,
        &EncodingKey::from_ec_der(&key.der),
    )
}

fn jwks() -> (Value, EcKey) {
    let ec = ec_key(1, "ec-1");
    let set = json!({ "keys": [rsa_jwk(RSA_2048, "rsa-1"), ec.jwk.clone()] });
    (set, ec)
}

fn verify(jwt: &str, jwks: &Value) -> Result<assertion::AssertionClaims, AssertionError> {
    assertion::verify_assertion(jwt, jwks, CLIENT, TOKEN_URL, NOW, 30)
}

fn with(mut claims: Value, name: &str, value: Value) -> Value {
    claims[name] = value;
    claims
}

fn without(mut claims: Value, name: &str) -> Value {
    claims.as_object_mut().unwrap().remove(name);
    claims
}

#[test]
fn good_assertions_verify() {
    let (set, ec) = jwks();
    assert_eq!(assertion::check_jwks(&set), Ok(()));

    let accepted = verify(&rs384(Some("rsa-1"), &claims()), &set).unwrap();
    assert_eq!(accepted.iss, CLIENT);
    assert_eq!(accepted.sub, CLIENT);
    assert_eq!(accepted.jti, "7f1c0e2a");
    assert_eq!(accepted.exp, NOW + 240);

    verify(&es384(&ec, Some("ec-1"), &claims()), &set).unwrap();
    // Without a kid every key of the algorithm's type is tried.
    verify(&rs384(None, &claims()), &set).unwrap();
    verify(&es384(&ec, None, &claims()), &set).unwrap();
    // aud as an array holding the token URL.
    verify(
        &rs384(None, &with(claims(), "aud", json!(["other", TOKEN_URL]))),
        &set,
    )
    .unwrap();
    // Exactly at the lifetime limit, and expired only within the leeway.
    verify(
        &rs384(
            None,
            &with(claims(), "exp", json!(NOW + MAX_ASSERTION_LIFETIME_SECS)),
        ),
        &set,
    )
    .unwrap();
    verify(&rs384(None, &with(claims(), "exp", json!(NOW - 10))), &set).unwrap();
}

#[test]
fn other_algorithms_are_refused() {
    let (set, _) = jwks();
    let body = URL_SAFE_NO_PAD.encode(claims().to_string());

    let none = format!("{}.{body}.", URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#));
    assert_eq!(
        verify(&none, &set),
        Err(AssertionError::UnsupportedAlgorithm)
    );

    // HS256 keyed with the public modulus: the classic algorithm-confusion attack.
    let public = set["keys"][0]["n"].as_str().unwrap().as_bytes().to_vec();
    let hs = sign(
        Algorithm::HS256,
        Some("rsa-1"),
        &claims(),
        &EncodingKey::from_secret(&public),
    );
    assert_eq!(verify(&hs, &set), Err(AssertionError::UnsupportedAlgorithm));

    let rs256 = sign(
        Algorithm::RS256,
        Some("rsa-1"),
        &claims(),
        &EncodingKey::from_rsa_der(RSA_2048),
    );
    assert_eq!(
        verify(&rs256, &set),
        Err(AssertionError::UnsupportedAlgorithm)
    );

    let ec = ec_key(1, "ec-1");
    let es256_header = URL_SAFE_NO_PAD.encode(r#"{"alg":"ES256","kid":"ec-1"}"#);
    let forged = es384(&ec, Some("ec-1"), &claims());
    let rest = forged.split_once('.').unwrap().1;
    assert_eq!(
        verify(&format!("{es256_header}.{rest}"), &set),
        Err(AssertionError::UnsupportedAlgorithm)
    );
}

#[test]
fn keys_must_match() {
    let (set, ec) = jwks();
    assert_eq!(
        verify(&rs384(Some("nobody"), &claims()), &set),
        Err(AssertionError::NoMatchingKey)
    );
    // A kid naming a key of the other type.
    assert_eq!(
        verify(&rs384(Some("ec-1"), &claims()), &set),
        Err(AssertionError::NoMatchingKey)
    );
    // Signed by an unregistered key that claims a registered kid.
    let stranger = ec_key(2, "ec-1");
    assert_eq!(
        verify(&es384(&stranger, Some("ec-1"), &claims()), &set),
        Err(AssertionError::BadSignature)
    );
    assert_eq!(
        verify(&es384(&stranger, None, &claims()), &set),
        Err(AssertionError::BadSignature)
    );
    // An RSA-only set has nothing for ES384.
    let rsa_only = json!({ "keys": [rsa_jwk(RSA_2048, "rsa-1")] });
    assert_eq!(
        verify(&es384(&ec, None, &claims()), &rsa_only),
        Err(AssertionError::NoMatchingKey)
    );
}

#[test]
fn tampering_is_detected() {
    let (set, ec) = jwks();
    for jwt in [
        rs384(Some("rsa-1"), &claims()),
        es384(&ec, Some("ec-1"), &claims()),
    ] {
        let mut parts: Vec<String> = jwt.split('.').map(str::to_owned).collect();
        parts[1] = URL_SAFE_NO_PAD.encode(with(claims(), "sub", json!(CLIENT)).to_string() + " ");
        assert_eq!(
            verify(&parts.join("."), &set),
            Err(AssertionError::BadSignature)
        );

        let mut signature = URL_SAFE_NO_PAD
            .decode(jwt.rsplit('.').next().unwrap())
            .unwrap();
        signature[5] ^= 1;
        let (signed, _) = jwt.rsplit_once('.').unwrap();
        let flipped = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature));
        assert_eq!(verify(&flipped, &set), Err(AssertionError::BadSignature));
    }
    for garbage in ["", "a.b.c", "not a jwt", "..", "e30.e30.e30"] {
        assert_eq!(
            verify(garbage, &set),
            Err(AssertionError::Malformed),
            "{garbage}"
        );
    }
}

#[test]
fn claims_are_checked() {
    let (set, _) = jwks();
    let check = |claims: Value| verify(&rs384(Some("rsa-1"), &claims), &set);

    assert_eq!(
        check(with(
            claims(),
            "aud",
            json!("https://vigil.example/auth/token/")
        )),
        Err(AssertionError::WrongAudience)
    );
    assert_eq!(
        check(without(claims(), "aud")),
        Err(AssertionError::WrongAudience)
    );
    assert_eq!(
        check(with(claims(), "exp", json!(NOW - 31))),
        Err(AssertionError::Expired)
    );
    assert_eq!(
        check(with(
            claims(),
            "exp",
            json!(NOW + MAX_ASSERTION_LIFETIME_SECS + 31)
        )),
        Err(AssertionError::TooLongLived)
    );
    assert_eq!(
        check(with(claims(), "nbf", json!(NOW + 120))),
        Err(AssertionError::Expired)
    );
    assert_eq!(
        check(without(claims(), "exp")),
        Err(AssertionError::Malformed)
    );
    assert_eq!(
        check(with(claims(), "sub", json!("someone-else"))),
        Err(AssertionError::IssuerMismatch)
    );
    assert_eq!(
        check(with(claims(), "iss", json!("someone-else"))),
        Err(AssertionError::IssuerMismatch)
    );
    assert_eq!(
        check(without(claims(), "iss")),
        Err(AssertionError::IssuerMismatch)
    );
    assert_eq!(
        check(without(claims(), "jti")),
        Err(AssertionError::MissingJti)
    );
    assert_eq!(
        check(with(claims(), "jti", json!(""))),
        Err(AssertionError::MissingJti)
    );
    // Another client's assertion is not ours.
    assert_eq!(
        assertion::verify_assertion(
            &rs384(Some("rsa-1"), &claims()),
            &set,
            "backend-2",
            TOKEN_URL,
            NOW,
            30
        ),
        Err(AssertionError::IssuerMismatch)
    );
    // Leeway is clamped to a minute.
    assert_eq!(
        assertion::verify_assertion(
            &rs384(Some("rsa-1"), &with(claims(), "exp", json!(NOW - 120))),
            &set,
            CLIENT,
            TOKEN_URL,
            NOW,
            3600
        ),
        Err(AssertionError::Expired)
    );
}

#[test]
fn registered_key_sets_are_checked() {
    let ec = ec_key(1, "ec-1");
    let good = rsa_jwk(RSA_2048, "rsa-1");
    let check = |set: Value| assertion::check_jwks(&set);

    assert_eq!(check(json!({ "keys": [good.clone()] })), Ok(()));
    assert_eq!(check(json!({ "keys": [ec.jwk.clone()] })), Ok(()));
    assert_eq!(check(json!({ "keys": [] })), Err(AssertionError::BadJwks));
    assert_eq!(check(json!([good.clone()])), Err(AssertionError::BadJwks));
    assert_eq!(
        check(json!({ "keys": [rsa_jwk(RSA_1024, "small")] })),
        Err(AssertionError::BadJwks)
    );
    // A private key (here the EC scalar) must never be registered.
    let secret = p384::SecretKey::random(&mut StdRng::seed_from_u64(1));
    assert_eq!(
        check(
            json!({ "keys": [with(ec.jwk.clone(), "d", json!(URL_SAFE_NO_PAD.encode(secret.to_bytes())))] })
        ),
        Err(AssertionError::BadJwks)
    );
    assert_eq!(
        check(json!({ "keys": [with(good.clone(), "d", json!("AQAB"))] })),
        Err(AssertionError::BadJwks)
    );
    assert_eq!(
        check(json!({ "keys": [{ "kty": "oct", "k": "c2VjcmV0" }] })),
        Err(AssertionError::BadJwks)
    );
    assert_eq!(
        check(json!({ "keys": [with(ec.jwk.clone(), "crv", json!("P-256"))] })),
        Err(AssertionError::BadJwks)
    );
    assert_eq!(
        check(json!({ "keys": [with(good.clone(), "alg", json!("RS256"))] })),
        Err(AssertionError::BadJwks)
    );
    assert_eq!(
        check(json!({ "keys": [with(good.clone(), "use", json!("enc"))] })),
        Err(AssertionError::BadJwks)
    );
    assert_eq!(
        check(json!({ "keys": [good.clone(), good.clone()] })),
        Err(AssertionError::BadJwks)
    );
    // A point off the curve.
    let mut y = URL_SAFE_NO_PAD
        .decode(ec.jwk["y"].as_str().unwrap())
        .unwrap();
    y[47] ^= 1;
    assert_eq!(
        check(json!({ "keys": [with(ec.jwk.clone(), "y", json!(URL_SAFE_NO_PAD.encode(y)))] })),
        Err(AssertionError::BadJwks)
    );
    // A set holding a private key is refused at verification time too.
    let leaky = json!({ "keys": [with(good, "d", json!("AQAB"))] });
    assert_eq!(
        verify(&rs384(Some("rsa-1"), &claims()), &leaky),
        Err(AssertionError::BadJwks)
    );
}

#[test]
fn id_tokens_verify_against_their_own_jwks() {
    let key = IdTokenKey::generate(&mut StdRng::seed_from_u64(3));
    let claims = IdTokenClaims {
        iss: "https://vigil.example".to_owned(),
        sub: "account-1".to_owned(),
        aud: "app-1".to_owned(),
        exp: NOW + 300,
        iat: NOW,
        fhir_user: "https://vigil.example/fhir/Practitioner/p1".to_owned(),
        nonce: Some("n-0S6".to_owned()),
    };
    let token = idtoken::sign_id_token(&claims, &key).unwrap();

    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_value(key.jwks()).unwrap();
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.alg, Algorithm::ES256);
    assert_eq!(header.kid.as_deref(), Some(key.kid().as_str()));
    let jwk = set.find(&key.kid()).unwrap();

    let mut validation = Validation::new(Algorithm::ES256);
    validation.validate_exp = false;
    validation.set_audience(&["app-1"]);
    validation.set_issuer(&["https://vigil.example"]);
    let decoded =
        jsonwebtoken::decode::<Value>(&token, &DecodingKey::from_jwk(jwk).unwrap(), &validation)
            .unwrap();
    assert_eq!(decoded.claims["fhirUser"], claims.fhir_user.as_str());
    assert_eq!(decoded.claims["nonce"], "n-0S6");
    assert_eq!(decoded.claims["exp"], NOW + 300);

    // Another key's set does not verify it.
    let other = IdTokenKey::generate(&mut StdRng::seed_from_u64(4));
    let other_set: jsonwebtoken::jwk::JwkSet = serde_json::from_value(other.jwks()).unwrap();
    let other_key = DecodingKey::from_jwk(other_set.keys.first().unwrap()).unwrap();
    assert!(jsonwebtoken::decode::<Value>(&token, &other_key, &validation).is_err());

    // No nonce, no member.
    let without_nonce = IdTokenClaims {
        nonce: None,
        ..claims.clone()
    };
    let token = idtoken::sign_id_token(&without_nonce, &key).unwrap();
    let payload = token.split('.').nth(1).unwrap();
    let payload: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    assert!(payload.get("nonce").is_none());

    assert_eq!(
        idtoken::sign_id_token(&IdTokenClaims { exp: NOW, ..claims }, &key),
        Err(idtoken::IdTokenError::BadLifetime)
    );
}
