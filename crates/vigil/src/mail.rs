//! SMTP delivery of the outbox (`[smtp]` in the configuration): lettre over
//! tokio, rustls on the ring provider, no connection pool.
//!
//! Errors handed back to the outbox name the kind of failure and the SMTP
//! reply code only: a relay's reply text can quote the recipient's address.

use std::time::Duration;

use anyhow::{Context, bail};
use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::{SmtpConfig, SmtpTls};

/// How long one delivery may take (connect, TLS, dialogue).
const TIMEOUT: Duration = Duration::from_secs(30);

/// Sends outbox messages through an SMTP relay.
pub struct SmtpMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl SmtpMailer {
    pub fn new(c: &SmtpConfig) -> anyhow::Result<SmtpMailer> {
        let from: Mailbox = c
            .from
            .parse()
            .with_context(|| format!("[smtp] from: {:?} is not a mail address", c.from))?;
        let builder = match c.tls {
            SmtpTls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&c.relay)
                .context("[smtp] relay")?
                .port(c.port.unwrap_or(587)),
            SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&c.relay)
                .context("[smtp] relay")?
                .port(c.port.unwrap_or(465)),
            SmtpTls::None => {
                if c.username.is_some() || c.password.is_some() {
                    bail!(
                        "[smtp] tls = \"none\" would send the relay password in clear; use \"starttls\" or \"tls\""
                    );
                }
                AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&c.relay)
                    .port(c.port.unwrap_or(25))
            }
        };
        let builder = builder.timeout(Some(TIMEOUT));
        let builder = match (&c.username, &c.password) {
            (Some(user), Some(pw)) => {
                builder.credentials(Credentials::new(user.clone(), pw.clone()))
            }
            (None, None) => builder,
            _ => bail!(
                "[smtp] needs both username and password (or VIGIL_SMTP_PASSWORD), or neither"
            ),
        };
        Ok(SmtpMailer {
            transport: builder.build(),
            from,
        })
    }
}

#[async_trait::async_trait]
impl app::Mailer for SmtpMailer {
    async fn send(&self, to: &str, subject: &str, body: &str) -> Result<(), String> {
        let to: Mailbox = to
            .parse()
            .map_err(|_| "the recipient is not a valid mail address".to_owned())?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .header(ContentType::TEXT_PLAIN)
            .body(body.to_owned())
            .map_err(|_| "the message could not be built".to_owned())?;
        self.transport
            .send(message)
            .await
            .map(|_| ())
            .map_err(|e| describe(&e))
    }
}

/// The failure without the relay's reply text.
fn describe(e: &lettre::transport::smtp::Error) -> String {
    let code = e.status().map(|c| format!(" ({c})")).unwrap_or_default();
    let kind = if e.is_permanent() {
        "the relay refused the message permanently"
    } else if e.is_transient() {
        "the relay refused the message for now"
    } else if e.is_timeout() {
        "the relay did not answer in time"
    } else if e.is_tls() {
        "TLS with the relay failed"
    } else {
        "could not talk to the relay"
    };
    format!("smtp: {kind}{code}")
}
