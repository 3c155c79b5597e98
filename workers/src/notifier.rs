//! The notifier worker: tells admins about each new registration and each sandbox alert
//! (DESIGN §4, issue 12 §4), by email for now.
//!
//! It reads the `USERS` stream through the durable consumer `notifier` and the `AGENTS` stream
//! through `notifier-agents` (explicit acks, so replicas share the work) and acks a commit only
//! after every mail for it was handed to the mail server; a failed send is redelivered after a
//! delay. Delivery is at least once: a crash between sending and acking sends that notification
//! again. Facts older than [`MAX_AGE`] are skipped, so pointing a new deployment at an old log
//! does not flood inboxes.
//!
//! Sandbox alerts are the agent facts an operator must hear about: `DeploymentFailed` (the
//! cause is in the deployer's log) and `SandboxAlerted` (docs/adr/0026-sandbox-alerts.md).
//!
//! Recipients are the configured admin addresses plus every approved admin in the users read
//! model. Mail goes through an [`Outbox`], which the binary backs with its SMTP mailer.

use crate::consume::{ConsumeError, Durable, Handled, consume};
use crate::supervise::supervise;
use async_nats::jetstream;
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use std::collections::BTreeSet;
use std::future::Future;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use warren_commands::codec::{self, HEADER_EVENT_TYPES};
use warren_commands::topology;
use warren_domain::agent::{AgentEvent, SandboxAlert};
use warren_domain::ids::AgentId;
use warren_domain::user::{UserEvent, UserStatus};

/// The durable consumer's name (registrations).
pub const CONSUMER: &str = "notifier";
/// The durable consumer of agent facts (sandbox alerts).
pub const AGENTS_CONSUMER: &str = "notifier-agents";
/// Registrations older than this are not announced.
pub const MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// Where notifications are sent.
pub trait Outbox: Send + Sync + 'static {
    /// Sends one plain-text message.
    fn send(
        &self,
        to: &str,
        subject: &str,
        body: &str,
    ) -> impl Future<Output = Result<(), Box<dyn std::error::Error + Send + Sync>>> + Send;
}

/// Why the notifier loop stopped.
#[derive(Debug, thiserror::Error)]
pub enum NotifierError {
    /// The consumer could not be set up or read.
    #[error(transparent)]
    Consumer(#[from] ConsumeError),
}

/// The notifier, built and ready to run.
pub struct Notifier<O> {
    js: jetstream::Context,
    db: PgPool,
    outbox: O,
    admin_emails: Vec<String>,
    frontend_url: String,
}

impl<O: Outbox> Notifier<O> {
    /// Builds the notifier: `admin_emails` always get notifications; links point at
    /// `frontend_url`.
    pub fn build(
        js: jetstream::Context,
        db: PgPool,
        outbox: O,
        admin_emails: Vec<String>,
        frontend_url: String,
    ) -> Self {
        Self {
            js,
            db,
            outbox,
            admin_emails,
            frontend_url,
        }
    }

    /// Runs until `shutdown`, restarting after failures.
    pub async fn run(self, shutdown: CancellationToken) {
        let this = &self;
        let users = supervise("notifier", shutdown.clone(), || {
            this.run_once(shutdown.clone(), topology::USERS, CONSUMER, "user.*")
        });
        let agents = supervise("notifier-agents", shutdown.clone(), || {
            this.run_once(
                shutdown.clone(),
                topology::AGENTS,
                AGENTS_CONSUMER,
                "agent.*",
            )
        });
        tokio::join!(users, agents);
    }

    async fn run_once(
        &self,
        shutdown: CancellationToken,
        stream: &'static str,
        name: &'static str,
        filter: &'static str,
    ) -> Result<(), NotifierError> {
        let durable = Durable {
            stream,
            name,
            filter,
            ack_wait: Duration::from_secs(60),
        };
        consume(&self.js, &durable, &shutdown, |message| async move {
            let handled = if stream == topology::AGENTS {
                self.handle_agent(&message).await
            } else {
                self.handle(&message).await
            };
            match handled {
                Ok(()) => Handled::Done,
                Err(Outcome::Retry(reason)) => Handled::Retry {
                    reason,
                    after: Duration::from_secs(5),
                },
                Err(Outcome::Poison(reason)) => Handled::Poison(reason),
            }
        })
        .await?;
        Ok(())
    }

    /// Mails admins each sandbox alert of the commit.
    async fn handle_agent(&self, message: &async_nats::Message) -> Result<(), Outcome> {
        let alerts = message
            .headers
            .as_ref()
            .and_then(|headers| codec::header(headers, HEADER_EVENT_TYPES))
            .is_none_or(|types| types.split(',').any(|t| ALERT_EVENTS.contains(&t)));
        if !alerts {
            return Ok(());
        }
        let envelopes = codec::decode::<AgentEvent>(&message.payload)
            .map_err(|err| Outcome::Poison(err.to_string()))?;
        for envelope in envelopes {
            let Some((agent_id, what, detail)) = alert_of(&envelope.event) else {
                continue;
            };
            if is_stale(envelope.occurred_at, Utc::now()) {
                continue;
            }
            let label = self
                .agent_label(agent_id)
                .await
                .map_err(|err| Outcome::Retry(err.to_string()))?;
            let (name, owner) = match label {
                Some(label) => label,
                // The projector has not written the agent yet (a deployment can fail within
                // milliseconds of its creation): wait for it a little, then send anyway.
                None if !is_older_than(envelope.occurred_at, Utc::now(), LABEL_WAIT) => {
                    return Err(Outcome::Retry(format!(
                        "agent {agent_id} is not in the read model yet"
                    )));
                }
                None => ("(unknown agent)".into(), "(unknown)".into()),
            };
            let recipients = self
                .recipients(None)
                .await
                .map_err(|err| Outcome::Retry(err.to_string()))?;
            let subject = format!("Warren alert: {what} ({name})");
            let body = format!(
                "Sandbox alert: {what}\nAgent: {name}\nAgent id: {agent_id}\nOwner: {owner}\n\
                 Detail: {detail}\nAt: {at}\n\nThe deployer's log has the cause. Manage agents at \
                 {frontend}/admin/agents\n",
                at = envelope.occurred_at.to_rfc3339(),
                frontend = self.frontend_url,
            );
            for to in &recipients {
                self.outbox
                    .send(to, &subject, &body)
                    .await
                    .map_err(|err| Outcome::Retry(err.to_string()))?;
            }
            tracing::info!(%agent_id, alert = what, admins = recipients.len(), "sandbox alert sent");
        }
        Ok(())
    }

    /// The agent's name and its owner's address, as the read model has them, if it has the
    /// agent yet.
    async fn agent_label(
        &self,
        agent_id: AgentId,
    ) -> Result<Option<(String, String)>, sqlx::Error> {
        let row: Option<(String, Option<String>)> = sqlx::query_as(
            "SELECT a.name, u.email FROM agents a LEFT JOIN users u ON u.id = a.owner_id WHERE a.id = $1",
        )
        .bind(agent_id.0)
        .fetch_optional(&self.db)
        .await?;
        Ok(row.map(|(name, email)| (name, email.unwrap_or_else(|| "(no email)".into()))))
    }

    async fn handle(&self, message: &async_nats::Message) -> Result<(), Outcome> {
        let registers = message
            .headers
            .as_ref()
            .and_then(|headers| codec::header(headers, HEADER_EVENT_TYPES))
            .is_none_or(|types| types.split(',').any(|t| t == "UserRegistered"));
        if !registers {
            return Ok(());
        }
        let envelopes = codec::decode::<UserEvent>(&message.payload)
            .map_err(|err| Outcome::Poison(err.to_string()))?;
        for envelope in envelopes {
            if let UserEvent::UserRegistered {
                user_id,
                email,
                display_name,
                status,
                ..
            } = &envelope.event
            {
                if is_stale(envelope.occurred_at, Utc::now()) {
                    continue;
                }
                let recipients = self
                    .recipients(email.as_deref())
                    .await
                    .map_err(|err| Outcome::Retry(err.to_string()))?;
                let who = email.as_deref().unwrap_or("(no email)");
                let name = display_name.as_deref().unwrap_or("(none)");
                let (subject, action) = if *status == UserStatus::Pending {
                    (
                        format!("Warren: {who} is waiting for approval"),
                        format!(
                            "Approve or reject at {}/admin/users?status=pending\n\
                             or with POST /api/v1/admin/users/{user_id}/approve (or /reject).",
                            self.frontend_url
                        ),
                    )
                } else {
                    (
                        format!("Warren: {who} joined"),
                        format!(
                            "Manage users at {}/admin/users?status=all",
                            self.frontend_url
                        ),
                    )
                };
                let body = format!(
                    "New user registration:\nEmail: {who}\nName: {name}\nUser id: {user_id}\nStatus: {status}\n\n{action}\n"
                );
                for to in &recipients {
                    self.outbox
                        .send(to, &subject, &body)
                        .await
                        .map_err(|err| Outcome::Retry(err.to_string()))?;
                }
                tracing::info!(user_id = %user_id, admins = recipients.len(), "registration announced");
            }
        }
        Ok(())
    }

    /// Configured admin addresses and approved admins' addresses, without `except`.
    async fn recipients(&self, except: Option<&str>) -> Result<BTreeSet<String>, sqlx::Error> {
        let admins: Vec<(String,)> = sqlx::query_as(
            "SELECT email FROM users WHERE role = 'admin' AND status = 'approved' AND email IS NOT NULL",
        )
        .fetch_all(&self.db)
        .await?;
        Ok(self
            .admin_emails
            .iter()
            .cloned()
            .chain(admins.into_iter().map(|(email,)| email.to_lowercase()))
            .filter(|email| Some(email.as_str()) != except)
            .collect())
    }
}

enum Outcome {
    /// Try again later (mail server or database down).
    Retry(String),
    /// Never readable: terminate the message.
    Poison(String),
}

/// The agent facts that are sandbox alerts.
const ALERT_EVENTS: [&str; 2] = ["DeploymentFailed", "SandboxAlerted"];

/// A sandbox alert's agent, what happened (for the subject) and its detail.
fn alert_of(event: &AgentEvent) -> Option<(AgentId, &'static str, String)> {
    match event {
        AgentEvent::DeploymentFailed {
            agent_id,
            step,
            error,
            ..
        } => Some((
            *agent_id,
            "deployment failed",
            format!("at step {step}: {error}"),
        )),
        AgentEvent::SandboxAlerted {
            agent_id,
            alert,
            detail,
        } => Some((
            *agent_id,
            match alert {
                SandboxAlert::OutOfMemory => "sandbox out of memory",
                SandboxAlert::HealthFailing => "health check failing",
            },
            detail.clone(),
        )),
        _ => None,
    }
}

/// How long an alert waits for its agent to reach the read model.
const LABEL_WAIT: Duration = Duration::from_secs(60);

fn is_stale(occurred_at: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    is_older_than(occurred_at, now, MAX_AGE)
}

fn is_older_than(occurred_at: DateTime<Utc>, now: DateTime<Utc>, age: Duration) -> bool {
    now.signed_duration_since(occurred_at)
        .to_std()
        .is_ok_and(|elapsed| elapsed > age)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registrations_older_than_a_day_are_not_announced() {
        let now = Utc::now();
        assert!(!is_stale(now, now));
        assert!(!is_stale(now - chrono::Duration::hours(23), now));
        assert!(is_stale(now - chrono::Duration::hours(25), now));
    }
}
