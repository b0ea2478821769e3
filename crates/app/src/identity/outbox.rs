//! The outbox: every outbound message (enrolment and reset links, later
//! consultation invites) is stored sealed, then delivered by a mail relay
//! (SMTP, from the binary) or, in demo mode, read on a page.

use model::Timestamp;
use serde::{Deserialize, Serialize};
use store::{AccountId, OutboxMessage};

use crate::{AppError, Principal, Vigil};

/// Delivers one message (SMTP in production).
#[async_trait::async_trait]
pub trait Mailer: Send + Sync {
    /// `Err` carries the relay's error, never message content.
    async fn send(&self, to: &str, subject: &str, body: &str) -> Result<(), String>;
}

/// Attempts per message before it is left for an operator.
const MAX_ATTEMPTS: u32 = 10;

#[derive(Serialize, Deserialize)]
struct Sealed {
    to: String,
    subject: String,
    body: String,
}

/// A message as the outbox page shows it.
#[derive(Debug, Clone)]
pub struct OutboxView {
    pub id: String,
    pub created: Timestamp,
    pub kind: String,
    pub to: String,
    pub subject: String,
    pub body: String,
    pub sent_at: Option<Timestamp>,
    pub attempts: u32,
    pub last_error: Option<String>,
}

impl Vigil {
    pub(crate) async fn enqueue(
        &self,
        account: Option<&AccountId>,
        kind: &str,
        to: &str,
        subject: &str,
        body: &str,
    ) -> Result<(), AppError> {
        let id = super::random_hex();
        let payload = self
            .seal_json(
                &format!("outbox|{id}"),
                &Sealed {
                    to: to.to_owned(),
                    subject: subject.to_owned(),
                    body: body.to_owned(),
                },
            )
            .await?;
        self.store
            .enqueue_message(&OutboxMessage {
                id: id.clone(),
                created: self.now(),
                account: account.cloned(),
                kind: kind.to_owned(),
                payload,
                sent_at: None,
                attempts: 0,
                last_error: None,
            })
            .await?;
        tracing::info!(message = %id, kind, "message queued");
        Ok(())
    }

    async fn open_message(&self, m: &OutboxMessage) -> Result<Sealed, AppError> {
        self.open_json(&format!("outbox|{}", m.id), &m.payload)
            .await
    }

    /// The newest messages, for administrators (the demo's outbox page).
    pub async fn outbox(&self, who: &Principal, limit: usize) -> Result<Vec<OutboxView>, AppError> {
        self.require_admin(who)?;
        let mut out = Vec::new();
        for m in self.store.messages(None, limit.min(500)).await? {
            let s = self.open_message(&m).await?;
            out.push(OutboxView {
                id: m.id,
                created: m.created,
                kind: m.kind,
                to: s.to,
                subject: s.subject,
                body: s.body,
                sent_at: m.sent_at,
                attempts: m.attempts,
                last_error: m.last_error,
            });
        }
        Ok(out)
    }

    /// Sends up to `max` unsent messages; returns how many went out.
    pub async fn deliver_outbox(&self, mailer: &dyn Mailer, max: usize) -> Result<usize, AppError> {
        let mut sent = 0;
        for m in self.store.unsent_messages(MAX_ATTEMPTS, max).await? {
            // SMS waits for an SMS relay; the mail relay takes e-mail only.
            if m.kind.ends_with("-sms") {
                continue;
            }
            let s = self.open_message(&m).await?;
            match mailer.send(&s.to, &s.subject, &s.body).await {
                Ok(()) => {
                    self.store.mark_message_sent(&m.id, self.now()).await?;
                    sent += 1;
                }
                Err(e) => {
                    tracing::warn!(message = %m.id, error = %e, "delivery failed");
                    let e: String = e.chars().take(500).collect();
                    self.store.mark_message_failed(&m.id, &e).await?;
                }
            }
        }
        Ok(sent)
    }
}
