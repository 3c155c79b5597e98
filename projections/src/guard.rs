//! The check every commit passes before a projection applies it: could its actor have caused
//! each of its events? A commit that fails it is parked with the reason, never applied.
//!
//! Only NATS credentials let anything write to the log, so a failure here means a forged or
//! buggy commit; the rule is [`warren_domain::authority`]'s, checked against this projection's
//! own rows so that a rebuild reaches the same verdict as the live run.

use crate::Projection;
use sqlx::PgConnection;
use uuid::Uuid;
use warren_domain::{Actor, Authority, Envelope};

/// Why the commit may not be applied, or `None` when every event in it is allowed.
pub async fn refusal<P: Projection>(
    tx: &mut PgConnection,
    envelopes: &[Envelope<P::Event>],
) -> Result<Option<String>, sqlx::Error> {
    // One commit is one aggregate: its subject is looked up once.
    let mut subject: Option<Option<Uuid>> = None;
    for envelope in envelopes {
        let Actor::User(actor) = &envelope.actor else {
            continue; // platform roles hold the log's credentials
        };
        let actor = actor.0;
        // Serialized only to name a refused event.
        let event = || event_type(envelope);
        let refused = match P::authority(&envelope.event) {
            Authority::Platform => Some(format!(
                "{} is caused by the platform only, not by user {actor}",
                event()
            )),
            Authority::Admin => (!is_admin(tx, actor).await?)
                .then(|| format!("{} needs an admin; user {actor} is not one", event())),
            Authority::Subject => {
                let owner = match subject {
                    Some(owner) => owner,
                    None => *subject.insert(P::subject(tx, envelope).await?),
                };
                match owner {
                    Some(owner) if owner == actor => None,
                    Some(owner) => Some(format!(
                        "{} concerns user {owner}; user {actor} may not cause it",
                        event()
                    )),
                    None => Some(format!(
                        "{} concerns {} {}, which this read model does not know",
                        event(),
                        P::NAME,
                        envelope.aggregate_id
                    )),
                }
            }
        };
        if refused.is_some() {
            return Ok(refused);
        }
    }
    Ok(None)
}

/// The stable type string of an event (`{"type": …}` in its stored form).
fn event_type<E: serde::Serialize>(envelope: &Envelope<E>) -> String {
    serde_json::to_value(&envelope.event)
        .ok()
        .and_then(|value| value.get("type")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| "event".to_owned())
}

/// Whether `user` is an approved admin in the users read model.
async fn is_admin(tx: &mut PgConnection, user: Uuid) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM users WHERE id = $1 AND role = 'admin' AND status = 'approved')",
    )
    .bind(user)
    .fetch_one(&mut *tx)
    .await
}
