//! Nothing writes to the log but Warren, and each of Warren's roles only what it owns: a real
//! nats-server configured as `warren dev` configures its own (warren-deploy's role keys and
//! permissions, ADR 13).

use async_nats::jetstream::{self, message::PublishMessage};
use std::time::Duration;
use warren_commands::codec;
use warren_commands::topology::{self, LogSettings};
use warren_deploy::{NatsKeys, Role, nats_auth};
use warren_domain::ids::{CommandId, EventId, UserId};
use warren_domain::user::{Role as UserRole, UserEvent};
use warren_domain::{Actor, Envelope};
use warren_testkit::TestNats;

/// How long a refused publish is given to be acknowledged (it never is).
const REFUSED_WITHIN: Duration = Duration::from_secs(2);

/// A commit making `user` an admin, as an attacker would forge it.
fn forged_promotion(user: UserId) -> Vec<u8> {
    let envelope = Envelope {
        id: EventId::new(),
        version: warren_domain::versions::current("RoleChanged").to_owned(),
        aggregate_id: user.to_string(),
        command_id: CommandId::new(),
        actor: Actor::System("edge".into()),
        occurred_at: chrono::Utc::now(),
        event: UserEvent::RoleChanged {
            user_id: user,
            role: UserRole::Admin,
        },
    };
    codec::encode(&[envelope]).expect("encode")
}

async fn setup() -> TestNats {
    let nats = TestNats::start().await;
    let js = jetstream::new(nats.client().await);
    topology::ensure(&js, &LogSettings::default())
        .await
        .expect("topology");
    nats
}

/// Publishes `payload` to `subject` as `role`; whether the stream acknowledged it.
async fn appended(nats: &TestNats, role: Role, subject: String, payload: Vec<u8>) -> bool {
    let js = jetstream::ContextBuilder::new()
        .timeout(REFUSED_WITHIN)
        .build(nats.client_as(role).await);
    let publish = PublishMessage::build().payload(payload.into());
    match js.send_publish(subject, publish).await {
        Ok(ack) => ack.await.is_ok(),
        Err(_) => false,
    }
}

async fn stored(nats: &TestNats, stream: &str) -> u64 {
    let js = jetstream::new(nats.client().await);
    let mut stream = js.get_stream(stream).await.expect("stream");
    stream.info().await.expect("info").state.messages
}

#[tokio::test]
async fn a_client_without_a_key_or_with_a_key_warren_does_not_know_cannot_connect() {
    let nats = setup().await;
    let anonymous = async_nats::ConnectOptions::new()
        .max_reconnects(Some(1))
        .connect(nats.url())
        .await;
    assert!(anonymous.is_err(), "connected without a key");
    let stranger = tempfile::tempdir().expect("tempdir");
    let keys = NatsKeys::ensure(stranger.path()).expect("keys");
    let forged = nats_auth::connect(&nats.url(), Some(&keys), Role::Admin).await;
    assert!(
        forged.is_err(),
        "connected with a key the server does not list"
    );
    // The platform's own admin key works.
    assert!(
        nats_auth::connect(&nats.url(), Some(nats.keys()), Role::Admin)
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn a_forged_commit_published_with_another_roles_key_is_refused_and_never_stored() {
    let nats = setup().await;
    let victim = UserId::new();
    for role in [Role::Projector, Role::Notifier, Role::Deployer, Role::Chat] {
        assert!(
            !appended(
                &nats,
                role,
                topology::user_subject(&victim.to_string()),
                forged_promotion(victim),
            )
            .await,
            "{role} appended to user.*"
        );
    }
    assert_eq!(stored(&nats, topology::USERS).await, 0);
    // The edge owns user commits: the same bytes from it are stored (and then judged by the
    // projector's actor check, tested with the projections).
    assert!(
        appended(
            &nats,
            Role::Edge,
            topology::user_subject(&victim.to_string()),
            forged_promotion(victim),
        )
        .await
    );
    assert_eq!(stored(&nats, topology::USERS).await, 1);
}

#[tokio::test]
async fn each_role_appends_exactly_the_commits_it_owns() {
    let nats = setup().await;
    let id = uuid::Uuid::now_v7().to_string();
    let subjects = [
        topology::user_subject(&id),
        topology::agent_subject(&id),
        topology::conversation_subject(&id),
        topology::conversation_live_subject(&id),
    ];
    // user.*, agent.*, conv.*.ev, conv.*.live
    let expected = [
        (Role::Edge, [true, true, true, false]),
        (Role::Projector, [false, false, false, false]),
        (Role::Deployer, [false, true, false, false]),
        (Role::Chat, [false, true, true, true]),
        (Role::Notifier, [false, false, false, false]),
        (Role::Telegram, [true, true, true, false]),
        (Role::Admin, [true, true, true, true]),
    ];
    let nats = &nats;
    let pairs: Vec<(Role, String)> = expected
        .iter()
        .flat_map(|(role, _)| subjects.iter().map(|subject| (*role, subject.clone())))
        .collect();
    let outcomes = futures::future::join_all(
        pairs
            .into_iter()
            .map(|(role, subject)| appended(nats, role, subject, b"[]".to_vec())),
    )
    .await;
    for (i, (role, allowed)) in expected.iter().enumerate() {
        let got = &outcomes[i * subjects.len()..(i + 1) * subjects.len()];
        assert_eq!(got, allowed, "{role}: user, agent, conv ev, conv live");
    }
}

#[tokio::test]
async fn only_the_roles_that_need_sealed_secrets_can_read_them() {
    let nats = setup().await;
    let admin = jetstream::new(nats.client().await);
    let secrets = admin
        .get_key_value(topology::KV_SECRETS)
        .await
        .expect("bucket");
    secrets
        .put("provider.k1", "sealed".into())
        .await
        .expect("put");
    for (role, readable) in [
        (Role::Edge, true),
        (Role::Chat, true),
        (Role::Deployer, true),
        (Role::Projector, false),
        (Role::Notifier, false),
        (Role::Telegram, true),
    ] {
        let js = jetstream::ContextBuilder::new()
            .timeout(REFUSED_WITHIN)
            .build(nats.client_as(role).await);
        let read = match js.get_key_value(topology::KV_SECRETS).await {
            Ok(bucket) => matches!(bucket.get("provider.k1").await, Ok(Some(_))),
            Err(_) => false,
        };
        assert_eq!(read, readable, "{role} reading KV_secrets");
    }
}
