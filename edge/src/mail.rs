//! Outgoing email over SMTP (`lettre`), or — under `warren dev` without `WARREN_SMTP_URL` — to
//! the log, so a developer can sign in without a mail server.

use lettre::message::header::{ContentTransferEncoding, ContentType};
use lettre::message::{Mailbox, SinglePart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

/// Why a message was not sent.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// `WARREN_SMTP_URL` does not parse.
    #[error("invalid smtp url")]
    Url(#[source] lettre::transport::smtp::Error),
    /// An address does not parse.
    #[error("invalid address {0:?}")]
    Address(String),
    /// Building the message failed.
    #[error("building the message failed")]
    Build(#[source] lettre::error::Error),
    /// The SMTP exchange failed.
    #[error("sending mail failed")]
    Send(#[source] lettre::transport::smtp::Error),
}

/// Where mail goes.
#[derive(Clone)]
pub enum Mailer {
    /// A real SMTP server.
    Smtp {
        /// The pooled transport.
        transport: AsyncSmtpTransport<Tokio1Executor>,
        /// The sender.
        from: Mailbox,
    },
    /// Development: each message is written to the log instead.
    Log,
}

impl Mailer {
    /// An SMTP mailer for `url` (`smtp://host:port` plain, `smtp://…?tls=required` STARTTLS,
    /// `smtps://` implicit TLS; credentials as `user:pass@`) sending as `from`.
    pub fn smtp(url: &str, from: &str) -> Result<Self, MailError> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(MailError::Url)?
            .build();
        let from = from
            .parse()
            .map_err(|_| MailError::Address(from.to_owned()))?;
        Ok(Mailer::Smtp { transport, from })
    }

    /// Sends a plain-text message.
    pub async fn send(&self, to: &str, subject: &str, body: &str) -> Result<(), MailError> {
        match self {
            Mailer::Log => {
                tracing::info!(
                    to,
                    subject,
                    body,
                    "mail (no WARREN_SMTP_URL; logged, not sent)"
                );
                Ok(())
            }
            Mailer::Smtp { transport, from } => {
                let to: Mailbox = to.parse().map_err(|_| MailError::Address(to.to_owned()))?;
                let message = Message::builder()
                    .from(from.clone())
                    .to(to)
                    .subject(subject)
                    .singlepart(
                        SinglePart::builder()
                            .header(ContentType::TEXT_PLAIN)
                            .header(ContentTransferEncoding::QuotedPrintable)
                            .body(body.to_owned()),
                    )
                    .map_err(MailError::Build)?;
                transport
                    .send(message)
                    .await
                    .map(drop)
                    .map_err(MailError::Send)
            }
        }
    }
}
