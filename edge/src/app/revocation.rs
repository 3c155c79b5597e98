//! When a user's access may have changed, every open connection of theirs in this process hears
//! of it within a moment, and re-checks ([`super::access::recheck`]).
//!
//! One watch per edge process, whatever its number of connections:
//! - the `auth_tokens` bucket's session records (`refresh.<user>.<family>`: a logout, a revoked
//!   family, a rotation) and logout-all stamps (`epoch.<user>`);
//! - the users' log (`user.*`, headers only) for the facts that change a standing:
//!   `UserRejected`, `UserAccessRevoked`, `RoleChanged`.
//!
//! A connection holds an [`AccessWatch`] for its user; a change bumps the user's counter, and the
//! connection re-checks. A re-check that still passes (a rotated refresh token, say) changes
//! nothing. Both reads restart on failure, and each restart bumps every watched user, since a
//! change may have been missed meanwhile.

use async_nats::jetstream::{self, consumer, kv};
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use warren_commands::codec::{self, HEADER_EVENT_TYPES};
use warren_commands::topology::{KV_AUTH, USERS};
use warren_domain::ids::UserId;

/// The event types that change a user's standing.
const STANDING_EVENTS: [&str; 3] = ["UserRejected", "UserAccessRevoked", "RoleChanged"];
/// How long a failed read waits before it is opened again.
const RETRY: Duration = Duration::from_millis(500);

/// The per-process registry of watched users.
#[derive(Clone, Default)]
pub struct Revocations {
    users: Arc<Mutex<HashMap<UserId, watch::Sender<u64>>>>,
}

/// A connection's subscription to its user's access changes.
pub struct AccessWatch {
    changes: watch::Receiver<u64>,
}

impl AccessWatch {
    /// Waits until the user's access may have changed since the last call (or since this
    /// watch was made).
    pub async fn changed(&mut self) {
        if self.changes.changed().await.is_err() {
            // The registry dropped this user's sender: nothing will ever change again.
            std::future::pending::<()>().await;
        }
    }
}

impl Revocations {
    /// Starts the process's watch over `js` until `closing`.
    pub fn start(js: jetstream::Context, closing: CancellationToken) -> Self {
        let revocations = Self::default();
        tokio::spawn(
            revocations
                .clone()
                .watch_sessions(js.clone(), closing.clone()),
        );
        tokio::spawn(revocations.clone().watch_standing(js, closing));
        revocations
    }

    /// A watch on `user`'s access.
    pub fn watch(&self, user: UserId) -> AccessWatch {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        // Forget users nobody watches any more.
        if users.len() > 64 {
            users.retain(|_, sender| sender.receiver_count() > 0);
        }
        let changes = users
            .entry(user)
            .or_insert_with(|| watch::channel(0).0)
            .subscribe();
        AccessWatch { changes }
    }

    /// Tells `user`'s connections to re-check.
    pub fn bump(&self, user: UserId) {
        let users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(sender) = users.get(&user) {
            sender.send_modify(|n| *n += 1);
        }
    }

    fn bump_everyone(&self) {
        let users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        for sender in users.values() {
            sender.send_modify(|n| *n += 1);
        }
    }

    async fn watch_sessions(self, js: jetstream::Context, closing: CancellationToken) {
        loop {
            let watched = async {
                let bucket = js.get_key_value(KV_AUTH).await.map_err(box_err)?;
                let mut changes = bucket
                    .watch_many(["refresh.>", "epoch.>"])
                    .await
                    .map_err(box_err)?;
                self.bump_everyone();
                while let Some(entry) = changes.next().await {
                    let entry: kv::Entry = entry.map_err(box_err)?;
                    if let Some(user) = crate::auth::tokens::user_of_key(&entry.key) {
                        self.bump(user);
                    }
                }
                Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
            };
            tokio::select! {
                _ = closing.cancelled() => return,
                outcome = watched => if let Err(err) = outcome {
                    tracing::warn!(error = %err, "watching sessions failed; watching again");
                },
            }
            tokio::select! {
                _ = closing.cancelled() => return,
                _ = tokio::time::sleep(RETRY) => {}
            }
        }
    }

    async fn watch_standing(self, js: jetstream::Context, closing: CancellationToken) {
        loop {
            let watched = async {
                let stream = js.get_stream_no_info(USERS).await.map_err(box_err)?;
                let consumer = stream
                    .create_consumer(consumer::pull::OrderedConfig {
                        filter_subject: "user.*".to_owned(),
                        deliver_policy: consumer::DeliverPolicy::New,
                        headers_only: true,
                        ..Default::default()
                    })
                    .await
                    .map_err(box_err)?;
                let mut messages = consumer.messages().await.map_err(box_err)?;
                self.bump_everyone();
                while let Some(message) = messages.next().await {
                    let message = message.map_err(box_err)?;
                    let changes_standing = message
                        .headers
                        .as_ref()
                        .and_then(|headers| codec::header(headers, HEADER_EVENT_TYPES))
                        .is_some_and(|types| {
                            types
                                .split(',')
                                .any(|t| STANDING_EVENTS.contains(&t.trim()))
                        });
                    let user = message
                        .subject
                        .strip_prefix("user.")
                        .and_then(|id| id.parse().ok())
                        .map(UserId);
                    if changes_standing && let Some(user) = user {
                        self.bump(user);
                    }
                }
                Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
            };
            tokio::select! {
                _ = closing.cancelled() => return,
                outcome = watched => if let Err(err) = outcome {
                    tracing::warn!(error = %err, "watching users' standing failed; watching again");
                },
            }
            tokio::select! {
                _ = closing.cancelled() => return,
                _ = tokio::time::sleep(RETRY) => {}
            }
        }
    }
}

fn box_err(
    err: impl std::error::Error + Send + Sync + 'static,
) -> Box<dyn std::error::Error + Send + Sync> {
    Box::new(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_bump_reaches_every_watch_of_that_user_and_no_other() {
        let revocations = Revocations::default();
        let (ada, bob) = (UserId::new(), UserId::new());
        let mut first = revocations.watch(ada);
        let mut second = revocations.watch(ada);
        let mut other = revocations.watch(bob);
        revocations.bump(ada);
        tokio::time::timeout(Duration::from_secs(1), first.changed())
            .await
            .expect("first watch");
        tokio::time::timeout(Duration::from_secs(1), second.changed())
            .await
            .expect("second watch");
        assert!(
            tokio::time::timeout(Duration::from_millis(50), other.changed())
                .await
                .is_err(),
            "another user's watch stays quiet"
        );
    }
}
