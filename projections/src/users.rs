//! Users, their auth methods and their provider-key references.

use crate::Projection;
use sqlx::PgConnection;
use uuid::Uuid;
use warren_commands::topology;
use warren_domain::user::UserEvent;
use warren_domain::{Authority, Envelope};

/// The users projection.
pub struct Users;

impl Projection for Users {
    const NAME: &'static str = "users";
    const STREAM: &'static str = topology::USERS;
    const FILTER: &'static str = "user.*";
    type Event = UserEvent;

    fn authority(event: &UserEvent) -> Authority {
        event.authority()
    }

    async fn subject(
        _: &mut PgConnection,
        envelope: &Envelope<UserEvent>,
    ) -> Result<Option<Uuid>, sqlx::Error> {
        Ok(Some(envelope.event.subject().0))
    }

    async fn apply(
        tx: &mut PgConnection,
        seq: u64,
        envelope: &Envelope<UserEvent>,
    ) -> Result<(), sqlx::Error> {
        let at = envelope.occurred_at;
        let seq = seq as i64;
        match &envelope.event {
            UserEvent::UserRegistered {
                user_id,
                email,
                display_name,
                avatar_url,
                show_tool_calls,
                auth,
                role,
                status,
                tier,
            } => {
                sqlx::query(
                    "INSERT INTO users (id, email, display_name, avatar_url, show_tool_calls, role, status, tier, \
                     created_at, updated_at, last_seq) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $10) \
                     ON CONFLICT (id) DO NOTHING",
                )
                .bind(user_id.0)
                .bind(email)
                .bind(display_name)
                .bind(avatar_url)
                .bind(show_tool_calls)
                .bind(role.as_str())
                .bind(status.as_str())
                .bind(tier.as_str())
                .bind(at)
                .bind(seq)
                .execute(&mut *tx)
                .await?;
                link(tx, user_id.0, auth, at).await
            }
            UserEvent::UserApproved { user_id, role } => {
                set_status(tx, user_id.0, "approved", None, Some(role.as_str()), at, seq).await
            }
            UserEvent::UserRejected { user_id, reason } => {
                set_status(tx, user_id.0, "rejected", reason.as_deref(), None, at, seq).await
            }
            UserEvent::UserAccessRevoked { user_id, reason, role } => {
                set_status(tx, user_id.0, "revoked", reason.as_deref(), Some(role.as_str()), at, seq).await
            }
            UserEvent::RoleChanged { user_id, role } => {
                sqlx::query("UPDATE users SET role = $2, updated_at = $3, last_seq = $4 WHERE id = $1 AND last_seq <= $4")
                    .bind(user_id.0)
                    .bind(role.as_str())
                    .bind(at)
                    .bind(seq)
                    .execute(&mut *tx)
                    .await
                    .map(drop)
            }
            UserEvent::AuthMethodLinked { user_id, auth } => link(tx, user_id.0, auth, at).await,
            UserEvent::AuthMethodUnlinked { connection_id, .. } => {
                sqlx::query("DELETE FROM auth_methods WHERE id = $1")
                    .bind(connection_id.0)
                    .execute(&mut *tx)
                    .await
                    .map(drop)
            }
            UserEvent::ProfileUpdated { user_id, display_name, avatar_url, show_tool_calls } => sqlx::query(
                "UPDATE users SET display_name = $2, avatar_url = $3, show_tool_calls = $4, updated_at = $5, \
                 last_seq = $6 WHERE id = $1 AND last_seq <= $6",
            )
            .bind(user_id.0)
            .bind(display_name)
            .bind(avatar_url)
            .bind(show_tool_calls)
            .bind(at)
            .bind(seq)
            .execute(&mut *tx)
            .await
            .map(drop),
            UserEvent::ProviderKeySet { user_id, key } => sqlx::query(
                "INSERT INTO provider_keys (id, user_id, provider, base_url, label, fingerprint, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO UPDATE SET provider = EXCLUDED.provider, \
                 base_url = EXCLUDED.base_url, label = EXCLUDED.label, fingerprint = EXCLUDED.fingerprint",
            )
            .bind(key.key_id.0)
            .bind(user_id.0)
            .bind(key.provider.as_str())
            .bind(&key.base_url)
            .bind(&key.label)
            .bind(&key.fingerprint)
            .bind(at)
            .execute(&mut *tx)
            .await
            .map(drop),
            UserEvent::ProviderKeyRemoved { key_id, .. } => sqlx::query("DELETE FROM provider_keys WHERE id = $1")
                .bind(key_id.0)
                .execute(&mut *tx)
                .await
                .map(drop),
            UserEvent::TierChanged { user_id, tier } => {
                sqlx::query("UPDATE users SET tier = $2, updated_at = $3, last_seq = $4 WHERE id = $1 AND last_seq <= $4")
                    .bind(user_id.0)
                    .bind(tier.as_str())
                    .bind(at)
                    .bind(seq)
                    .execute(&mut *tx)
                    .await
                    .map(drop)
            }
        }
    }
}

async fn link(
    tx: &mut PgConnection,
    user_id: uuid::Uuid,
    auth: &warren_domain::user::AuthMethod,
    at: chrono::DateTime<chrono::Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO auth_methods (id, user_id, kind, external_id, created_at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT DO NOTHING",
    )
    .bind(auth.connection_id.0)
    .bind(user_id)
    .bind(auth.kind.as_str())
    .bind(&auth.external_id)
    .bind(at)
    .execute(&mut *tx)
    .await
    .map(drop)
}

async fn set_status(
    tx: &mut PgConnection,
    user_id: uuid::Uuid,
    status: &str,
    reason: Option<&str>,
    role: Option<&str>,
    at: chrono::DateTime<chrono::Utc>,
    seq: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE users SET status = $2, status_reason = $3, role = COALESCE($4, role), updated_at = $5, last_seq = $6 \
         WHERE id = $1 AND last_seq <= $6",
    )
    .bind(user_id)
    .bind(status)
    .bind(reason)
    .bind(role)
    .bind(at)
    .bind(seq)
    .execute(&mut *tx)
    .await
    .map(drop)
}
