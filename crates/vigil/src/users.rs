//! The identity verbs: `vigil user …`, `vigil client …`, `vigil token issue`.
//! Each runs as `Principal::Operator` (whoever holds the key file and the
//! database) through the same façade as the server.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

use anyhow::{Context, bail};
use app::{AppError, NewAccount, NewClient, Principal, Vigil};
use zeroize::Zeroizing;

use crate::config::Settings;

/// The façade's refusal with its reasons (its `Display` is only the kind).
pub fn explain(e: AppError) -> anyhow::Error {
    let detail = match &e {
        AppError::BadRequest(issues) | AppError::Unprocessable(issues) => issues
            .iter()
            .map(|i| i.diagnostics.as_str())
            .collect::<Vec<_>>()
            .join("; "),
        AppError::Forbidden(m)
        | AppError::NotFound(m)
        | AppError::Gone(m)
        | AppError::Conflict(m)
        | AppError::TooLarge(m) => m.clone(),
        _ => String::new(),
    };
    if detail.is_empty() {
        anyhow::Error::new(e)
    } else {
        anyhow::anyhow!("{e}: {detail}")
    }
}

/// The public site (`https://vigil.example`) and FHIR base
/// (`https://vigil.example/fhir`): from `public_url`, else the listen address.
pub fn site_and_fhir_base(s: &Settings) -> (String, String) {
    let fhir = match &s.public_url {
        Some(u) => u.trim_end_matches('/').to_owned(),
        None => {
            let scheme = if s.tls.is_some() { "https" } else { "http" };
            format!("{scheme}://{}/fhir", s.listen)
        }
    };
    let site = fhir.strip_suffix("/fhir").unwrap_or(&fhir).to_owned();
    (site, fhir)
}

/// Reads one line from standard input without echoing it on a terminal.
pub fn read_password_line() -> anyhow::Result<Zeroizing<String>> {
    let stdin = std::io::stdin();
    let tty = stdin.is_terminal();
    if tty {
        eprint!("Password: ");
        let _ = std::io::stderr().flush();
        set_echo(false);
    }
    let mut line = Zeroizing::new(String::new());
    let read = stdin.lock().read_line(&mut line);
    if tty {
        set_echo(true);
        eprintln!();
    }
    read.context("reading the password from standard input")?;
    let trimmed = Zeroizing::new(line.trim_end_matches(['\r', '\n']).to_owned());
    if trimmed.is_empty() {
        bail!("no password on standard input");
    }
    Ok(trimmed)
}

fn set_echo(on: bool) {
    #[cfg(unix)]
    {
        let _ = std::process::Command::new("stty")
            .arg(if on { "echo" } else { "-echo" })
            .stdin(std::process::Stdio::inherit())
            .status();
    }
    #[cfg(not(unix))]
    let _ = on;
}

/// What `vigil user add` is asked to do.
pub struct AddUser {
    pub account: NewAccount,
    pub password_stdin: bool,
    pub send_enrolment: bool,
}

pub async fn user_add(vigil: &Vigil, s: &Settings, req: AddUser) -> anyhow::Result<()> {
    let password = if req.password_stdin {
        Some(read_password_line()?)
    } else {
        None
    };
    let username = req.account.username.clone();
    let role = req.account.role;
    let id = vigil
        .create_account(
            &Principal::Operator,
            req.account,
            password.as_ref().map(|p| p.as_str()),
        )
        .await
        .map_err(explain)?;
    println!("Created the {role} account {username}.");
    if req.send_enrolment {
        let (site, _) = site_and_fhir_base(s);
        vigil
            .send_enrolment(&Principal::Operator, &id, &site)
            .await
            .map_err(explain)?;
        println!("An enrolment link is in the outbox.");
    } else if password.is_none() {
        println!("No password yet: send an enrolment link (--send-enrolment) or set one.");
    }
    Ok(())
}

pub async fn user_list(vigil: &Vigil) -> anyhow::Result<()> {
    let accounts = vigil
        .list_accounts(&Principal::Operator)
        .await
        .map_err(explain)?;
    let mut rows = vec![[
        "USERNAME".to_owned(),
        "ROLE".to_owned(),
        "ACTIVE".to_owned(),
        "MFA".to_owned(),
        "LINKED".to_owned(),
    ]];
    for a in accounts {
        let mut mfa = Vec::new();
        if a.totp {
            mfa.push("totp".to_owned());
        }
        if a.passkeys > 0 {
            mfa.push(format!("passkeys:{}", a.passkeys));
        }
        if a.recovery_codes > 0 {
            mfa.push(format!("recovery:{}", a.recovery_codes));
        }
        let linked = match (&a.practitioner, &a.patient) {
            (Some(p), _) => format!("Practitioner/{p}"),
            (None, Some(p)) => format!("Patient/{p}"),
            (None, None) => "-".to_owned(),
        };
        rows.push([
            a.username,
            a.role.to_string(),
            if a.active { "yes" } else { "no" }.to_owned(),
            if mfa.is_empty() {
                "none".to_owned()
            } else {
                mfa.join(",")
            },
            linked,
        ]);
    }
    print_table(&rows);
    Ok(())
}

fn print_table<const N: usize>(rows: &[[String; N]]) {
    let mut widths = [0usize; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
}

pub async fn user_deactivate(vigil: &Vigil, username: &str) -> anyhow::Result<()> {
    let a = vigil.account_by_username(username).await.map_err(explain)?;
    vigil
        .deactivate_account(&Principal::Operator, &a.id)
        .await
        .map_err(explain)?;
    println!(
        "Deactivated {}: its sessions and tokens no longer work.",
        a.username
    );
    Ok(())
}

pub async fn user_reset_mfa(vigil: &Vigil, username: &str) -> anyhow::Result<()> {
    let a = vigil.account_by_username(username).await.map_err(explain)?;
    vigil
        .reset_second_factors(&Principal::Operator, &a.id)
        .await
        .map_err(explain)?;
    println!(
        "Removed every second factor of {}; they enrol again at next sign-in.",
        a.username
    );
    Ok(())
}

pub async fn client_add(
    vigil: &Vigil,
    mut new: NewClient,
    jwks_file: Option<&Path>,
) -> anyhow::Result<()> {
    if let Some(path) = jwks_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the JWK Set {}", path.display()))?;
        new.jwks = Some(
            serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", path.display()))?,
        );
    }
    let kind = if new.jwks.is_some() {
        "confidential (private_key_jwt)"
    } else {
        "public (PKCE)"
    };
    let id = new.client_id.clone();
    vigil
        .add_client(&Principal::Operator, new)
        .await
        .map_err(explain)?;
    println!("Registered the {kind} client {id}.");
    Ok(())
}

pub async fn client_list(vigil: &Vigil) -> anyhow::Result<()> {
    let clients = vigil
        .list_clients(&Principal::Operator)
        .await
        .map_err(explain)?;
    let mut rows = vec![[
        "CLIENT_ID".to_owned(),
        "NAME".to_owned(),
        "ACTIVE".to_owned(),
        "TYPE".to_owned(),
        "SCOPE".to_owned(),
        "REDIRECT_URIS".to_owned(),
    ]];
    for c in clients {
        rows.push([
            c.client_id,
            c.name,
            if c.active { "yes" } else { "no" }.to_owned(),
            if c.confidential {
                "confidential"
            } else {
                "public"
            }
            .to_owned(),
            c.scope,
            c.redirect_uris.join(","),
        ]);
    }
    print_table(&rows);
    Ok(())
}

pub async fn client_revoke(vigil: &Vigil, id: &str) -> anyhow::Result<()> {
    vigil
        .revoke_client(&Principal::Operator, id)
        .await
        .map_err(explain)?;
    println!("Revoked the client {id}: it gets no new tokens and its tokens stop working.");
    Ok(())
}

/// `15m`, `900s`, `1h` or plain seconds.
pub fn parse_ttl(s: &str) -> anyhow::Result<u64> {
    let s = s.trim();
    let (digits, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = digits
        .parse()
        .with_context(|| format!("--ttl {s:?}: expected e.g. 15m, 900s or 1h"))?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => bail!("--ttl {s:?}: the unit is s, m or h"),
    };
    n.checked_mul(mult).context("--ttl is too long")
}

pub async fn token_issue(
    vigil: &Vigil,
    s: &Settings,
    username: Option<&str>,
    scope: &str,
    ttl: &str,
) -> anyhow::Result<()> {
    let ttl = parse_ttl(ttl)?;
    let (site, fhir) = site_and_fhir_base(s);
    let token = match username {
        Some(u) => {
            vigil
                .issue_operator_token(u, scope, ttl, &site, &fhir)
                .await
        }
        None => vigil.issue_service_token(scope, ttl, &site, &fhir).await,
    }
    .map_err(explain)?;
    println!("{token}");
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::parse_ttl;

    #[test]
    fn ttls() {
        assert_eq!(parse_ttl("15m").unwrap(), 900);
        assert_eq!(parse_ttl("900").unwrap(), 900);
        assert_eq!(parse_ttl("30s").unwrap(), 30);
        assert_eq!(parse_ttl("1h").unwrap(), 3600);
        assert!(parse_ttl("m").is_err());
        assert!(parse_ttl("5d").is_err());
        assert!(parse_ttl("").is_err());
    }
}
