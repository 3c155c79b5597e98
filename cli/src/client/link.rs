//! A gateway connection that survives drops: when the socket closes (a restarted edge, a
//! network blip, an access token that expired), it signs the socket in again with a fresh token
//! and resumes the session exactly after the last `seq` it delivered, so nothing is lost or
//! repeated.

use super::api::Api;
use super::events::{Event, Kind};
use super::gateway::Gateway;
use anyhow::Context;
use serde_json::{Value, json};
use std::time::Duration;

/// Reconnection attempts before giving up.
const ATTEMPTS: u32 = 8;

/// The codes with which the gateway ends a socket that a new one (with a fresh token, resumed
/// by `seq`) makes whole: nothing for the person to see.
const RESUMABLE: &[&str] = &["token_expired", "slow_consumer"];

/// The session a link follows.
#[derive(Clone, Debug)]
pub struct Following {
    /// The session (conversation).
    pub session_id: String,
    /// Its agent.
    pub agent_id: String,
}

/// A resumable gateway connection.
pub struct Link {
    api: Api,
    gateway: Gateway,
    following: Option<Following>,
    last_seq: Option<u64>,
}

impl Link {
    /// Connects with the signed-in `api`'s token.
    pub async fn open(mut api: Api) -> anyhow::Result<Self> {
        let token = api.access_token().await?;
        let gateway = Gateway::connect(api.base(), &token).await?;
        Ok(Self {
            api,
            gateway,
            following: None,
            last_seq: None,
        })
    }

    /// The REST client (and its store).
    pub fn api(&mut self) -> &mut Api {
        &mut self.api
    }

    /// The session followed, if any.
    pub fn following(&self) -> Option<&Following> {
        self.following.as_ref()
    }

    /// Records that the gateway now follows `following` (after `sessions.new`, `switch`, …),
    /// from `seq` if known.
    pub fn follow(&mut self, following: Following, seq: Option<u64>) {
        self.following = Some(following);
        self.last_seq = seq;
    }

    /// One request on the current socket.
    pub async fn call(&mut self, method: &str, params: Value) -> anyhow::Result<Value> {
        self.gateway.call(method, params).await
    }

    /// The next event, reconnecting and resuming after the last `seq` when the socket ends.
    /// Cancel-safe while connected.
    pub async fn next_event(&mut self) -> anyhow::Result<Event> {
        loop {
            let ended = match self.gateway.next_event().await {
                Ok(Some(event)) => {
                    if let Kind::Error(error) = &event.kind
                        && error.run_id.is_none()
                        && RESUMABLE.contains(&error.error_code.as_str())
                    {
                        tracing::debug!(code = %error.error_code, "the gateway ends the socket");
                        continue;
                    }
                    if let Some(seq) = event.seq {
                        self.last_seq = Some(self.last_seq.map_or(seq, |last| last.max(seq)));
                    }
                    return Ok(event);
                }
                Ok(None) => None,
                Err(err) => Some(err),
            };
            tracing::debug!(error = ?ended, "the gateway connection ended; reconnecting");
            self.reconnect().await?;
        }
    }

    async fn reconnect(&mut self) -> anyhow::Result<()> {
        let mut delay = Duration::from_millis(200);
        let mut last_error = None;
        for _ in 0..ATTEMPTS {
            match self.resume().await {
                Ok(()) => return Ok(()),
                Err(err) => last_error = Some(err),
            }
            // Backoff between attempts, not a synchronisation.
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("no attempt made")))
            .context("lost the gateway connection")
    }

    async fn resume(&mut self) -> anyhow::Result<()> {
        let token = self.api.access_token().await?;
        let mut gateway = Gateway::connect(self.api.base(), &token).await?;
        if let Some(following) = &self.following {
            let mut params = json!({"sessionId": following.session_id});
            if let Some(after) = self.last_seq {
                params["after"] = after.into();
            }
            gateway.call("sessions.switch", params).await?;
        }
        self.gateway = gateway;
        Ok(())
    }
}
