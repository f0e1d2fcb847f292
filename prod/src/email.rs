//! Real email over SMTP (lettre). Mail is first written to the `email_outbox` table
//! (in the same transaction as what caused it, or idempotently by command id), then
//! the mailer task sends due mail with retries and exponential backoff. Account mails
//! (codes, reset links, "you have an account") lose their body once sent or given up,
//! so no code stays in the database in clear.

use std::sync::Arc;
use std::time::Duration;

use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use payperplay_core::{Email, MICROS_PER_EUR};
use secrecy::ExposeSecret;
use tokio::sync::{Notify, watch};

use crate::clock::Clock;
use crate::config::{SmtpConfig, SmtpTls};
use crate::store::{OutboxRow, Store, StoreError};

/// Mails sent per pass at most.
const BATCH_MAX: i64 = 50;

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("smtp configuration: {0}")]
    Config(String),
    #[error("message: {0}")]
    Message(String),
    #[error("smtp: {0}")]
    Smtp(String),
}

pub fn format_eur(micros: i64) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let abs = micros.unsigned_abs();
    let cents = abs / (MICROS_PER_EUR as u64 / 100);
    format!("{sign}{}.{:02} EUR", cents / 100, cents % 100)
}

pub fn verification_mail(base_url: &str, token: &str) -> (String, String) {
    (
        "Confirm your PayPerPlay address".to_string(),
        format!(
            "Welcome to PayPerPlay!\r\n\r\nConfirm your address with this code:\r\n\r\n    {token}\r\n\r\n\
             or by sending it to {base_url}/v1/accounts/verify.\r\n\r\n\
             If you did not sign up, ignore this mail.\r\n"
        ),
    )
}

/// Sent when someone registers with an address that has an account: the form
/// answers the same either way, the mail says what happened.
pub fn account_exists_mail(base_url: &str) -> (String, String) {
    (
        "You already have a PayPerPlay account".to_string(),
        format!(
            "Someone (maybe you) tried to register a new PayPerPlay account with this address,\r\n\
             which already has one. Nothing was changed.\r\n\r\n\
             Log in at {base_url}, or if you forgot your password, ask for a reset at\r\n\
             {base_url}/v1/accounts/password/forgot.\r\n\r\n\
             If it was not you, ignore this mail.\r\n"
        ),
    )
}

pub fn password_reset_mail(base_url: &str, token: &str, valid_for_ms: u64) -> (String, String) {
    let valid_for_min = valid_for_ms.div_ceil(60_000);
    (
        "Reset your PayPerPlay password".to_string(),
        format!(
            "Someone (maybe you) asked to reset the password of your PayPerPlay account.\r\n\r\n\
             Set a new password with this code (it works once, for {valid_for_min} minutes):\r\n\r\n    {token}\r\n\r\n\
             by sending it with your new password to {base_url}/v1/accounts/password/reset.\r\n\
             Every session and API token of the account ends when the password is reset.\r\n\r\n\
             If it was not you, ignore this mail: your password stays as it is.\r\n"
        ),
    )
}

/// (kind, subject, body) of a mail the core asked for.
pub fn render_core_mail(mail: &Email, base_url: &str) -> (&'static str, String, String) {
    match mail {
        Email::LowBalance { balance_micros } => (
            "low_balance",
            "Your PayPerPlay balance is running low".to_string(),
            format!(
                "Your balance is {}.\r\nWhen it reaches zero your running servers are stopped.\r\n\
                 Top up at {base_url}.\r\n",
                format_eur(*balance_micros)
            ),
        ),
        Email::StoppedForZeroBalance { server_ids } => {
            let ids: Vec<String> = server_ids.iter().map(ToString::to_string).collect();
            (
                "stopped_zero_balance",
                "Your PayPerPlay servers were stopped".to_string(),
                format!(
                    "Your balance reached zero, so these servers were stopped: {}.\r\n\
                     Their worlds are kept. Top up at {base_url} to start them again.\r\n",
                    ids.join(", ")
                ),
            )
        }
    }
}

pub struct Mailer {
    store: Store,
    clock: Arc<dyn Clock>,
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    config: SmtpConfig,
    wakeup: Arc<Notify>,
}

impl Mailer {
    pub fn new(
        config: &SmtpConfig,
        store: Store,
        clock: Arc<dyn Clock>,
        wakeup: Arc<Notify>,
    ) -> Result<Mailer, MailError> {
        let from: Mailbox = config
            .from
            .parse()
            .map_err(|_| MailError::Config("smtp.from is not a mailbox".to_string()))?;
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.host)
            .port(config.port)
            .timeout(Some(Duration::from_millis(config.timeout_ms)));
        let tls_parameters =
            || TlsParameters::new(config.host.clone()).map_err(|error| MailError::Config(error.to_string()));
        builder = match config.tls {
            SmtpTls::None => builder.tls(Tls::None),
            SmtpTls::StartTls => builder.tls(Tls::Required(tls_parameters()?)),
            SmtpTls::Tls => builder.tls(Tls::Wrapper(tls_parameters()?)),
        };
        if let (Some(username), Some(password)) = (&config.username, &config.password) {
            builder = builder.credentials(Credentials::new(username.clone(), password.expose_secret().to_string()));
        }
        Ok(Mailer {
            store,
            clock,
            transport: builder.build(),
            from,
            config: config.clone(),
            wakeup,
        })
    }

    /// Sends due mail until shutdown. Errors of single mails are recorded on the
    /// mail; a database error ends the task (its supervisor restarts it).
    pub async fn run(&self, mut shutdown: watch::Receiver<bool>) -> Result<(), StoreError> {
        loop {
            if *shutdown.borrow() {
                return Ok(());
            }
            let n_sent = self.send_due().await?;
            if n_sent as i64 == BATCH_MAX {
                continue;
            }
            tokio::select! {
                _ = shutdown.changed() => {}
                _ = self.wakeup.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(self.config.poll_interval_ms)) => {}
            }
        }
    }

    /// One pass over due mail; returns how many were attempted.
    pub async fn send_due(&self) -> Result<usize, StoreError> {
        let due = self.store.due_emails(self.clock.now(), BATCH_MAX).await?;
        let n_due = due.len();
        for mail in due {
            match self.send(&mail).await {
                Ok(()) => {
                    self.store.mark_email_sent(mail.id, self.clock.now()).await?;
                    self.store.scrub_account_mail(mail.id).await?;
                    metrics::counter!("payperplay_emails_sent_total").increment(1);
                }
                Err(error) => {
                    let attempts = mail.attempts as u32 + 1;
                    let next_attempt_at = (attempts < self.config.send_attempts_max).then(|| {
                        let backoff_ms = self.config.retry_backoff_ms.saturating_mul(1 << (attempts - 1).min(16));
                        self.clock.now().plus_ms(backoff_ms)
                    });
                    tracing::warn!(mail_id = mail.id, attempts, %error, gives_up = next_attempt_at.is_none(), "mail not sent");
                    metrics::counter!("payperplay_emails_failed_attempts_total").increment(1);
                    self.store
                        .mark_email_failed(mail.id, &error.to_string(), next_attempt_at)
                        .await?;
                    if next_attempt_at.is_none() {
                        self.store.scrub_account_mail(mail.id).await?;
                    }
                }
            }
        }
        Ok(n_due)
    }

    async fn send(&self, mail: &OutboxRow) -> Result<(), MailError> {
        let to: Mailbox = mail
            .recipient
            .parse()
            .map_err(|_| MailError::Message("recipient is not a mailbox".to_string()))?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(mail.subject.clone())
            .body(mail.body.clone())
            .map_err(|error| MailError::Message(error.to_string()))?;
        self.transport
            .send(message)
            .await
            .map_err(|error| MailError::Smtp(error.to_string()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn euros_are_formatted_from_micros() {
        assert_eq!(format_eur(1_234_567), "1.23 EUR");
        assert_eq!(format_eur(-500_000), "-0.50 EUR");
        assert_eq!(format_eur(0), "0.00 EUR");
    }

    #[test]
    fn core_mails_name_what_happened() {
        let (kind, _, body) = render_core_mail(
            &Email::StoppedForZeroBalance {
                server_ids: vec![payperplay_core::ServerId(7)],
            },
            "http://x",
        );
        assert_eq!(kind, "stopped_zero_balance");
        assert!(body.contains('7'));
        let (_, _, body) = render_core_mail(
            &Email::LowBalance {
                balance_micros: 900_000,
            },
            "http://x",
        );
        assert!(body.contains("0.90 EUR"), "{body}");
    }
}
