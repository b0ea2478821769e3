//! The identity verbs on the real binary over SQLite: `user add` with a
//! password on standard input, `user list`, the password policy, `token
//! issue` accepted by a running server, `user deactivate`, and `client
//! add/list/revoke`.

use std::io::Write;
use std::process::Stdio;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::harness::{Scratch, Server, run, vigil_cmd};

/// Runs a verb with `input` on standard input; returns (success, stdout, stderr).
fn run_with_stdin(args: &[&str], envs: &[(&str, &str)], input: &str) -> (bool, String, String) {
    let mut child = vigil_cmd(args, envs)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn get_status(base: &str, path: &str, token: &str) -> u16 {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let req = hyper::Request::builder()
        .uri(format!("{base}{path}"))
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await.unwrap();
    status
}

const STRONG: &str = "violet-anchor-tundra-57-quill";

#[tokio::test]
async fn users_tokens_and_clients_from_the_command_line() {
    let dir = Scratch::new("users");
    let data = dir.0.join("data");
    let d = data.to_str().unwrap();
    let s = Server::start(&["--data-dir", d], &[], &dir.0);
    // Tokens are for the server's FHIR base (their audience): the public URL,
    // which this server derives from the Host header.
    let fhir_base = format!("{}/fhir", s.base);
    let env = [("VIGIL_PUBLIC_URL", fhir_base.as_str())];

    // A weak password is refused with the policy's reason, and nothing is stored.
    let (ok, out, err) = run_with_stdin(
        &[
            "user",
            "add",
            "--username",
            "weak.one",
            "--role",
            "physician",
            "--data-dir",
            d,
            "--password-stdin",
        ],
        &env,
        "password1234\n",
    );
    assert!(!ok, "{out}{err}");
    assert!(err.contains("password refused"), "{err}");
    assert!(
        !err.contains("password1234"),
        "the password was echoed: {err}"
    );

    // A strong one from standard input.
    let (ok, out, err) = run_with_stdin(
        &[
            "user",
            "add",
            "--username",
            "dr.ada",
            "--role",
            "physician",
            "--name",
            "Ada Lovelace",
            "--email",
            "ada@clinic.example",
            "--password-stdin",
            "--data-dir",
            d,
        ],
        &env,
        &format!("{STRONG}\n"),
    );
    assert!(ok, "{out}{err}");
    assert!(!out.contains(STRONG) && !err.contains(STRONG));

    let (ok, out, err) = run(&["user", "list", "--data-dir", d], &env);
    assert!(ok, "{out}{err}");
    let line = out
        .lines()
        .find(|l| l.starts_with("dr.ada "))
        .unwrap_or_else(|| panic!("dr.ada is not listed: {out}"));
    assert!(line.contains("physician") && line.contains("yes"), "{line}");
    assert!(!out.contains("weak.one"), "{out}");

    // A token for scripts: only the token on stdout, accepted by the server.
    let (ok, out, err) = run(
        &[
            "token",
            "issue",
            "--username",
            "dr.ada",
            "--scope",
            "user/Patient.rs",
            "--ttl",
            "10m",
            "--data-dir",
            d,
        ],
        &env,
    );
    assert!(ok, "{out}{err}");
    let token = out.trim().to_owned();
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(!token.contains(' '), "{token}");
    assert_eq!(get_status(&s.base, "/fhir/Patient", &token).await, 200);
    assert_eq!(get_status(&s.base, "/fhir/Patient", "garbage").await, 401);

    // Deactivation: the same token stops working.
    let (ok, out, err) = run(&["user", "deactivate", "dr.ada", "--data-dir", d], &env);
    assert!(ok, "{out}{err}");
    assert_eq!(get_status(&s.base, "/fhir/Patient", &token).await, 401);
    let (_, out, _) = run(&["user", "list", "--data-dir", d], &env);
    let line = out.lines().find(|l| l.starts_with("dr.ada ")).unwrap();
    assert!(line.contains(" no "), "{line}");
    let (ok, _, err) = run(
        &[
            "token",
            "issue",
            "--username",
            "dr.ada",
            "--scope",
            "user/Patient.rs",
            "--data-dir",
            d,
        ],
        &env,
    );
    assert!(!ok);
    assert!(err.contains("deactivated"), "{err}");

    // Clients.
    let (ok, out, err) = run(
        &[
            "client",
            "add",
            "--client-id",
            "growth-chart",
            "--name",
            "Growth chart",
            "--redirect-uri",
            "https://apps.example/callback",
            "--scope",
            "launch/patient patient/Observation.rs",
            "--data-dir",
            d,
        ],
        &env,
    );
    assert!(ok, "{out}{err}");
    assert!(out.contains("public (PKCE)"), "{out}");
    let (ok, out, err) = run(&["client", "list", "--data-dir", d], &env);
    assert!(ok, "{out}{err}");
    let line = out
        .lines()
        .find(|l| l.starts_with("growth-chart "))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(line.contains(" yes ") && line.contains("public"), "{line}");
    assert!(line.contains("https://apps.example/callback"), "{line}");
    let (ok, out, err) = run(&["client", "revoke", "growth-chart", "--data-dir", d], &env);
    assert!(ok, "{out}{err}");
    let (_, out, _) = run(&["client", "list", "--data-dir", d], &env);
    let line = out
        .lines()
        .find(|l| l.starts_with("growth-chart "))
        .unwrap();
    assert!(line.contains(" no "), "{line}");
    let (ok, _, err) = run(&["client", "revoke", "growth-chart", "--data-dir", d], &env);
    assert!(!ok);
    assert!(err.contains("no such active client"), "{err}");
    s.stop();
}

#[test]
fn token_issue_is_refused_when_operator_tokens_are_off() {
    let dir = Scratch::new("optokens");
    let data = dir.0.join("data");
    let d = data.to_str().unwrap();
    // The key file is created by the server's first start.
    let s = Server::start(&["--data-dir", d], &[], &dir.0);
    s.stop();
    let (ok, out, err) = run_with_stdin(
        &[
            "user",
            "add",
            "--username",
            "nurse.bo",
            "--role",
            "nurse",
            "--password-stdin",
            "--data-dir",
            d,
        ],
        &[],
        &format!("{STRONG}\n"),
    );
    assert!(ok, "{out}{err}");
    let config = dir.0.join("vigil.toml");
    std::fs::write(&config, "[identity]\noperator_tokens = false\n").unwrap();
    let c = config.to_str().unwrap();
    let (ok, out, err) = run(
        &[
            "token",
            "issue",
            "--username",
            "nurse.bo",
            "--scope",
            "user/Patient.rs",
            "--config",
            c,
            "--data-dir",
            d,
        ],
        &[],
    );
    assert!(!ok);
    assert!(out.is_empty(), "{out}");
    assert!(err.contains("operator_tokens = false"), "{err}");
}
