//! SMTP delivery of the outbox.
