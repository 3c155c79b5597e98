//! The JetStream event store against a real `nats-server`: idempotent commands, conflicts, catch-up.

use async_nats::jetstream;
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use warren_commands::store::{CommandMeta, Store, Stored};
use warren_commands::topology::{self, LogSettings};
use warren_commands::{CommandError, codec};
use warren_domain::Actor;
use warren_testkit::TestNats;

/// A small bank account: enough rules to tell a stale decision from a fresh one.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Account {
    opened: bool,
    balance: i64,
}

#[derive(Clone, Debug)]
enum AccountCommand {
    Open,
    Deposit(i64),
    Withdraw(i64),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
enum AccountEvent {
    Opened {},
    Deposited { amount: i64 },
    Withdrew { amount: i64 },
}

impl DomainEvent for AccountEvent {
    fn event_type(&self) -> String {
        match self {
            AccountEvent::Opened {} => "Opened",
            AccountEvent::Deposited { .. } => "Deposited",
            AccountEvent::Withdrew { .. } => "Withdrew",
        }
        .into()
    }
    fn event_version(&self) -> String {
        "1".into()
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
enum AccountError {
    #[error("insufficient funds")]
    Insufficient,
    #[error("not open")]
    NotOpen,
}

impl Account {
    fn decide(&self, cmd: &AccountCommand) -> Result<Vec<AccountEvent>, AccountError> {
        match cmd {
            AccountCommand::Open => Ok(vec![AccountEvent::Opened {}]),
            _ if !self.opened => Err(AccountError::NotOpen),
            AccountCommand::Deposit(amount) => {
                Ok(vec![AccountEvent::Deposited { amount: *amount }])
            }
            AccountCommand::Withdraw(amount) if *amount > self.balance => {
                Err(AccountError::Insufficient)
            }
            AccountCommand::Withdraw(amount) => {
                Ok(vec![AccountEvent::Withdrew { amount: *amount }])
            }
        }
    }
}

impl Aggregate for Account {
    const TYPE: &'static str = "account";
    type Command = AccountCommand;
    type Event = AccountEvent;
    type Error = AccountError;
    type Services = ();

    async fn handle(
        &mut self,
        cmd: AccountCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), AccountError> {
        for event in self.decide(&cmd)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: AccountEvent) {
        match event {
            AccountEvent::Opened {} => self.opened = true,
            AccountEvent::Deposited { amount } => self.balance += amount,
            AccountEvent::Withdrew { amount } => self.balance -= amount,
        }
    }
}

impl Stored for Account {
    const STREAM: &'static str = topology::USERS;
    fn subject(id: &str) -> String {
        topology::user_subject(id)
    }
}

async fn setup() -> (TestNats, jetstream::Context) {
    let nats = TestNats::start().await;
    let js = jetstream::new(nats.client().await);
    topology::ensure(&js, &LogSettings::default())
        .await
        .expect("topology");
    (nats, js)
}

fn meta() -> CommandMeta {
    CommandMeta::new(Actor::System("test".into()))
}

async fn messages_on(
    js: &jetstream::Context,
    subject: &str,
) -> Vec<async_nats::jetstream::message::StreamMessage> {
    let stream = js.get_stream(topology::USERS).await.expect("stream");
    let mut out = Vec::new();
    let mut next = 1;
    while let Ok(message) = stream
        .direct_get_next_for_subject(subject, Some(next))
        .await
    {
        next = message.sequence + 1;
        out.push(message);
    }
    out
}

fn id() -> String {
    uuid::Uuid::now_v7().to_string()
}

#[tokio::test]
async fn a_command_is_stored_as_one_message_with_its_metadata() {
    let (_nats, js) = setup().await;
    let store: Store<Account> = Store::open(js.clone()).await.expect("open");
    let account = id();
    let meta = meta();
    let committed = store
        .execute(&account, AccountCommand::Open, &meta)
        .await
        .expect("open");
    assert!(!committed.duplicate);
    assert_eq!(committed.events.len(), 1);

    let messages = messages_on(&js, &topology::user_subject(&account)).await;
    assert_eq!(messages.len(), 1);
    let headers = &messages[0].headers;
    assert_eq!(
        codec::header(headers, codec::HEADER_MSG_ID),
        Some(meta.command_id.to_string().as_str())
    );
    assert_eq!(
        codec::header(headers, codec::HEADER_EVENT_TYPES),
        Some("Opened")
    );
    assert_eq!(
        codec::header(headers, codec::HEADER_ACTOR),
        Some("system:test")
    );
    let traceparent = codec::header(headers, codec::HEADER_TRACEPARENT).expect("traceparent");
    assert_eq!(traceparent.len(), 55, "W3C traceparent: {traceparent}");
    let stored: Vec<warren_domain::Envelope<AccountEvent>> =
        codec::decode(&messages[0].payload).expect("decode");
    assert_eq!(stored[0].command_id, meta.command_id);
    assert_eq!(stored[0].aggregate_id, account);
    assert_eq!(stored[0].event, AccountEvent::Opened {});
}

#[tokio::test]
async fn a_repeated_command_id_is_stored_once() {
    let (_nats, js) = setup().await;
    let store: Store<Account> = Store::open(js.clone()).await.expect("open");
    let account = id();
    store
        .execute(&account, AccountCommand::Open, &meta())
        .await
        .expect("open");
    let deposit = meta();
    let first = store
        .execute(&account, AccountCommand::Deposit(10), &deposit)
        .await
        .expect("deposit");
    let again = store
        .execute(&account, AccountCommand::Deposit(10), &deposit)
        .await
        .expect("retry");
    assert!(again.duplicate);
    assert_eq!(again.sequence, first.sequence);

    // A different process (cold cache) retrying the same command is also deduplicated.
    let other: Store<Account> = Store::open(js.clone()).await.expect("open");
    let third = other
        .execute(&account, AccountCommand::Deposit(10), &deposit)
        .await
        .expect("retry");
    assert!(third.duplicate);
    assert_eq!(
        messages_on(&js, &topology::user_subject(&account))
            .await
            .len(),
        2
    );
}

#[tokio::test]
async fn a_retry_after_a_lost_ack_is_recognised_not_reported_as_a_conflict() {
    let (_nats, js) = setup().await;
    let account = id();
    // `stale` loaded the account before its own first attempt landed and never saw the ack.
    let stale: Store<Account> = Store::open(js.clone()).await.expect("open");
    stale
        .execute(&account, AccountCommand::Open, &meta())
        .await
        .expect("open");

    // The first attempt of the deposit reached the log, but its ack was lost on the way back:
    // another connection stands in for that attempt, so `stale`'s cache does not know about it.
    let deposit = meta();
    let landed: Store<Account> = Store::open(js.clone()).await.expect("open");
    landed
        .execute(&account, AccountCommand::Deposit(5), &deposit)
        .await
        .expect("first attempt");

    // The retry: the sequence check fails before dedupe would run; the store reads the subject,
    // finds its own command id there, and reports success without appending again.
    let retry = stale
        .execute(&account, AccountCommand::Deposit(5), &deposit)
        .await
        .expect("retry");
    assert!(
        retry.duplicate,
        "the retry must be recognised as already stored"
    );
    assert_eq!(
        messages_on(&js, &topology::user_subject(&account))
            .await
            .len(),
        2
    );
}

#[tokio::test]
async fn two_racing_commands_give_one_success_and_one_conflict_without_retries() {
    let (_nats, js) = setup().await;
    let account = id();
    let a: Store<Account> = Store::open(js.clone())
        .await
        .expect("open")
        .with_max_attempts(1);
    let b: Store<Account> = Store::open(js.clone())
        .await
        .expect("open")
        .with_max_attempts(1);
    a.execute(&account, AccountCommand::Open, &meta())
        .await
        .expect("open");
    // A refused command loads b's cache at the same sequence as a's without appending.
    b.execute(&account, AccountCommand::Withdraw(100), &meta())
        .await
        .expect_err("warm b");
    let (ma, mb) = (meta(), meta());
    let (ra, rb) = tokio::join!(
        a.execute(&account, AccountCommand::Deposit(1), &ma),
        b.execute(&account, AccountCommand::Deposit(2), &mb),
    );
    let conflicts = [&ra, &rb]
        .iter()
        .filter(|r| matches!(r, Err(CommandError::Conflict { attempts: 1, .. })))
        .count();
    let successes = [&ra, &rb].iter().filter(|r| r.is_ok()).count();
    assert_eq!((successes, conflicts), (1, 1), "a: {ra:?}, b: {rb:?}");
}

#[tokio::test]
async fn racing_commands_are_decided_again_on_fresh_state_after_a_conflict() {
    let (_nats, js) = setup().await;
    let account = id();
    let a: Store<Account> = Store::open(js.clone()).await.expect("open");
    let b: Store<Account> = Store::open(js.clone()).await.expect("open");
    a.execute(&account, AccountCommand::Open, &meta())
        .await
        .expect("open");
    a.execute(&account, AccountCommand::Deposit(10), &meta())
        .await
        .expect("deposit");
    b.execute(&account, AccountCommand::Withdraw(100), &meta())
        .await
        .expect_err("warm b");
    // Both try to withdraw the whole balance: the loser re-decides on fresh state and is refused.
    let (ma, mb) = (meta(), meta());
    let (ra, rb) = tokio::join!(
        a.execute(&account, AccountCommand::Withdraw(10), &ma),
        b.execute(&account, AccountCommand::Withdraw(10), &mb),
    );
    let refused = [&ra, &rb]
        .iter()
        .filter(|r| matches!(r, Err(CommandError::Rejected(AccountError::Insufficient))))
        .count();
    assert_eq!(refused, 1, "a: {ra:?}, b: {rb:?}");
    assert_eq!([&ra, &rb].iter().filter(|r| r.is_ok()).count(), 1);
}

#[tokio::test]
async fn a_cold_store_catches_up_from_the_log() {
    let (_nats, js) = setup().await;
    let account = id();
    let writer: Store<Account> = Store::open(js.clone()).await.expect("open");
    writer
        .execute(&account, AccountCommand::Open, &meta())
        .await
        .expect("open");
    for _ in 0..20 {
        writer
            .execute(&account, AccountCommand::Deposit(1), &meta())
            .await
            .expect("deposit");
    }
    let reader: Store<Account> = Store::open(js.clone()).await.expect("open");
    reader
        .execute(&account, AccountCommand::Withdraw(20), &meta())
        .await
        .expect("balance is 20");
    let err = reader
        .execute(&account, AccountCommand::Withdraw(1), &meta())
        .await
        .expect_err("balance is 0");
    assert!(matches!(
        err,
        CommandError::Rejected(AccountError::Insufficient)
    ));
    // The writer's cache is stale; its rejection-refresh sees the withdrawal.
    let err = writer
        .execute(&account, AccountCommand::Withdraw(1), &meta())
        .await
        .expect_err("stale writer");
    assert!(matches!(
        err,
        CommandError::Rejected(AccountError::Insufficient)
    ));
}

#[tokio::test]
async fn setting_up_the_topology_twice_is_harmless() {
    let (_nats, js) = setup().await;
    topology::ensure(&js, &LogSettings::default())
        .await
        .expect("second ensure");
    let info = js
        .get_stream(topology::CONVERSATIONS)
        .await
        .expect("stream")
        .info()
        .await
        .expect("info")
        .clone();
    assert!(info.config.allow_direct);
    assert_eq!(
        info.config.storage,
        async_nats::jetstream::stream::StorageType::File
    );
}
