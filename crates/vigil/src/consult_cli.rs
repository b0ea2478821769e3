//! `vigil consult …`: the operator's checks of the video-consultation set-up.
//!
//! `turn-credential` mints a short-lived TURN credential from the
//! configured `[consult]` secret, exactly as the server does for an admitted
//! participant, and prints it with the ICE servers a browser would get and
//! a `turnutils_uclient` command that checks coturn accepts it. `check`
//! reads the `[consult]` settings and says what is missing or unsafe.

use clap::Subcommand;

use crate::Common;

#[derive(Subcommand, Debug)]
pub enum ConsultCommand {
    /// Mints a TURN credential as the server would after an admission.
    TurnCredential {
        /// The opaque id in the username (never a name).
        #[arg(long, default_value = "operator-check")]
        participant: String,
        /// Lifetime in seconds (default: the configured turn_ttl_secs).
        #[arg(long)]
        ttl: Option<i64>,
        #[command(flatten)]
        common: Common,
    },
    /// Checks the `[consult]` settings: STUN/TURN URLs, the secret, origins.
    Check {
        #[command(flatten)]
        common: Common,
    },
}

fn now_secs() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    )
    .unwrap_or(0)
}

/// What is wrong or weak in a `[consult]` section (empty: nothing).
pub fn problems(c: &app::telehealth::ConsultConfig, public_url: Option<&str>) -> Vec<String> {
    let mut out = Vec::new();
    if c.turn_urls.is_empty() {
        out.push(
            "no turn_urls: calls between networks that block direct connections will fail".into(),
        );
    }
    for u in &c.turn_urls {
        if !(u.starts_with("turn:") || u.starts_with("turns:")) {
            out.push(format!(
                "turn_urls entry {u:?} is not a turn: or turns: URL"
            ));
        }
    }
    for u in &c.stun_urls {
        if !(u.starts_with("stun:") || u.starts_with("stuns:")) {
            out.push(format!(
                "stun_urls entry {u:?} is not a stun: or stuns: URL"
            ));
        }
    }
    match c.turn_secret.as_deref() {
        None | Some("") if !c.turn_urls.is_empty() => out
            .push("turn_urls are set but turn_secret is not (coturn's static-auth-secret)".into()),
        Some(s) if s.len() < 32 => out.push(
            "turn_secret is shorter than 32 characters; generate one with `openssl rand -hex 32`"
                .into(),
        ),
        _ => {}
    }
    if !c.turn_urls.iter().any(|u| u.starts_with("turns:")) && !c.turn_urls.is_empty() {
        out.push(
            "no turns: URL: patients on networks that allow only TLS (443/5349) cannot relay"
                .into(),
        );
    }
    if c.turn_ttl_secs > 3600 {
        out.push("turn_ttl_secs over an hour: a copied credential stays usable too long".into());
    }
    if c.allowed_origins.is_empty() && public_url.is_none() {
        out.push(
            "neither allowed_origins nor public_url is set: the WebSocket accepts only the \
             origin of the Host header the browser used"
                .into(),
        );
    }
    for o in &c.allowed_origins {
        if o.starts_with("http://") && !o.starts_with("http://localhost") {
            out.push(format!(
                "allowed origin {o} is plain HTTP: browsers give cameras only to secure origins"
            ));
        }
    }
    out
}

pub fn run(cmd: ConsultCommand) -> anyhow::Result<()> {
    match cmd {
        ConsultCommand::TurnCredential {
            participant,
            ttl,
            common,
        } => {
            let s = crate::config::load(&crate::overrides(&common, None))?;
            let c = &s.consult;
            let Some(secret) = c.turn_secret.as_deref().filter(|s| !s.is_empty()) else {
                anyhow::bail!("[consult] turn_secret is not set (or VIGIL_TURN_SECRET)");
            };
            let ttl = ttl.unwrap_or(c.turn_ttl_secs);
            let cred = consult::turn::mint(secret.as_bytes(), &participant, now_secs(), ttl)?;
            let ice = consult::turn::ice_servers(
                &consult::turn::IceConfig {
                    stun_urls: c.stun_urls.clone(),
                    turn_urls: c.turn_urls.clone(),
                },
                &cred,
            );
            println!("username:   {}", cred.username);
            println!("credential: {}", cred.credential);
            println!("expires:    {} (in {ttl} s)", cred.expires);
            println!("iceServers: {}", serde_json::to_string_pretty(&ice)?);
            if let Some(host) = c
                .turn_urls
                .first()
                .and_then(|u| u.split_once(':'))
                .map(|(_, rest)| rest.split(['?', ':']).next().unwrap_or(rest).to_owned())
            {
                println!(
                    "check coturn: turnutils_uclient -y -u '{}' -w '{}' {host}",
                    cred.username, cred.credential
                );
            }
            Ok(())
        }
        ConsultCommand::Check { common } => {
            let s = crate::config::load(&crate::overrides(&common, None))?;
            let found = problems(&s.consult, s.public_url.as_deref());
            if found.is_empty() {
                println!("[consult] looks right");
                return Ok(());
            }
            for p in &found {
                println!("- {p}");
            }
            anyhow::bail!("{} problem(s) in [consult]", found.len())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use app::telehealth::ConsultConfig;

    #[test]
    fn a_good_section_has_no_problems_and_each_slip_is_named() {
        let good = ConsultConfig {
            stun_urls: vec!["stun:turn.clinic.example:3478".into()],
            turn_urls: vec![
                "turn:turn.clinic.example:3478?transport=udp".into(),
                "turns:turn.clinic.example:5349?transport=tcp".into(),
            ],
            turn_secret: Some("a".repeat(64)),
            ..ConsultConfig::default()
        };
        assert!(problems(&good, Some("https://vigil.clinic.example")).is_empty());
        let no_secret = ConsultConfig {
            turn_secret: None,
            ..good.clone()
        };
        assert!(problems(&no_secret, Some("https://x"))[0].contains("turn_secret"));
        let stun_as_turn = ConsultConfig {
            turn_urls: vec!["stun:x:3478".into()],
            ..good.clone()
        };
        assert!(
            problems(&stun_as_turn, Some("https://x"))
                .iter()
                .any(|p| p.contains("not a turn:"))
        );
        let plain = ConsultConfig {
            allowed_origins: vec!["http://vigil.clinic.example".into()],
            ..good
        };
        assert!(
            problems(&plain, None)
                .iter()
                .any(|p| p.contains("plain HTTP"))
        );
    }
}
