//! Pins the stored JSON of one representative event per aggregate, wrapped in its envelope.
//! If one of these fails, the stored format changed: add a new event version and an upcaster
//! instead of editing the expectation (DESIGN §2).

use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::fmt::Debug;
use uuid::Uuid;
use warren_domain::agent::{AgentEvent, Backend, ExecFailure, RuntimeKind};
use warren_domain::conversation::{ConversationEvent, TokenUsage, ToolCall};
use warren_domain::ids::{
    AgentId, CommandId, ConnectionId, ConversationId, EventId, ExecId, MessageId, RunId, UserId,
};
use warren_domain::user::{AuthKind, AuthMethod, Provider, Role, Tier, UserEvent, UserStatus};
use warren_domain::versions::upcast;
use warren_domain::{Actor, Envelope};

fn at() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 26, 10, 30, 0)
        .single()
        .expect("a valid instant")
}

fn id(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

fn envelope<E>(aggregate: Uuid, actor: Actor, event: E) -> Envelope<E> {
    Envelope {
        id: EventId(id(0xE1)),
        version: "1".into(),
        aggregate_id: aggregate.to_string(),
        command_id: CommandId(id(0xC1)),
        actor,
        occurred_at: at(),
        event,
    }
}

/// Asserts the envelope serializes to `expected` and reads back equal.
#[track_caller]
fn assert_golden<E>(stored: &Envelope<E>, expected: Value)
where
    E: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let json = serde_json::to_value(stored).expect("serializes");
    assert_eq!(json, expected);
    let back: Envelope<E> = serde_json::from_value(expected).expect("deserializes");
    assert_eq!(&back, stored);
}

/// Asserts the older form `old` is lifted to `current` on read.
#[track_caller]
fn assert_upcast<E>(mut old: Value, current: &Envelope<E>)
where
    E: DeserializeOwned + PartialEq + Debug,
{
    upcast(&mut old);
    let back: Envelope<E> = serde_json::from_value(old).expect("deserializes once lifted");
    assert_eq!(&back, current);
}

#[test]
fn user_registered_is_stored_as_pinned() {
    let user = UserId(id(1));
    let event = UserEvent::UserRegistered {
        user_id: user,
        email: Some("ada@example.com".into()),
        display_name: Some("Ada".into()),
        avatar_url: None,
        show_tool_calls: true,
        auth: AuthMethod {
            connection_id: ConnectionId(id(2)),
            kind: AuthKind::Telegram,
            external_id: "123456789".into(),
        },
        role: Role::Guest,
        status: UserStatus::Pending,
        tier: Tier::Free,
    };
    assert_golden(
        &envelope(user.0, Actor::System("telegram".into()), event),
        json!({
            "id": "00000000-0000-0000-0000-0000000000e1",
            "version": "1",
            "aggregate_id": "00000000-0000-0000-0000-000000000001",
            "command_id": "00000000-0000-0000-0000-0000000000c1",
            "actor": {"kind": "system", "id": "telegram"},
            "occurred_at": "2026-01-26T10:30:00Z",
            "type": "UserRegistered",
            "data": {
                "user_id": "00000000-0000-0000-0000-000000000001",
                "email": "ada@example.com",
                "display_name": "Ada",
                "avatar_url": null,
                "show_tool_calls": true,
                "auth": {
                    "connection_id": "00000000-0000-0000-0000-000000000002",
                    "kind": "telegram",
                    "external_id": "123456789"
                },
                "role": "guest",
                "status": "pending",
                "tier": "free"
            }
        }),
    );
}

#[test]
fn agent_created_is_stored_as_pinned() {
    let agent = AgentId(id(3));
    let owner = UserId(id(1));
    let event = AgentEvent::AgentCreated {
        agent_id: agent,
        owner_id: owner,
        name: "Scout".into(),
        system_prompt: "You are helpful.".into(),
        model: "qwen3-coder-next".into(),
        runtime: RuntimeKind::BaalAgent,
        backend: Backend::Ssh,
        host: None,
    };
    assert_golden(
        &envelope(agent.0, Actor::User(owner), event),
        json!({
            "id": "00000000-0000-0000-0000-0000000000e1",
            "version": "1",
            "aggregate_id": "00000000-0000-0000-0000-000000000003",
            "command_id": "00000000-0000-0000-0000-0000000000c1",
            "actor": {"kind": "user", "id": "00000000-0000-0000-0000-000000000001"},
            "occurred_at": "2026-01-26T10:30:00Z",
            "type": "AgentCreated",
            "data": {
                "agent_id": "00000000-0000-0000-0000-000000000003",
                "owner_id": "00000000-0000-0000-0000-000000000001",
                "name": "Scout",
                "system_prompt": "You are helpful.",
                "model": "qwen3-coder-next",
                "runtime": "baal_agent",
                "backend": "ssh"
            }
        }),
    );
}

/// A deployment from the warm pool records its workspace; one without (cold, or stored before
/// the field existed) keeps version 1's exact shape.
#[test]
fn agent_deployed_is_stored_as_pinned_with_and_without_its_workspace() {
    let agent = AgentId(id(3));
    let deployed = |workspace: Option<&str>| AgentEvent::AgentDeployed {
        agent_id: agent,
        deployment_id: id(7),
        endpoint_url: "http://10.213.0.2:8080".into(),
        workspace: workspace.map(str::to_owned),
    };
    let mut expected = json!({
        "id": "00000000-0000-0000-0000-0000000000e1",
        "version": "1",
        "aggregate_id": "00000000-0000-0000-0000-000000000003",
        "command_id": "00000000-0000-0000-0000-0000000000c1",
        "actor": {"kind": "system", "id": "deployer"},
        "occurred_at": "2026-01-26T10:30:00Z",
        "type": "AgentDeployed",
        "data": {
            "agent_id": "00000000-0000-0000-0000-000000000003",
            "deployment_id": "00000000-0000-0000-0000-000000000007",
            "endpoint_url": "http://10.213.0.2:8080"
        }
    });
    let system = || Actor::System("deployer".into());
    assert_golden(
        &envelope(agent.0, system(), deployed(None)),
        expected.clone(),
    );
    expected["data"]["workspace"] = json!("warren-ws-pool-1a2b3c");
    assert_golden(
        &envelope(agent.0, system(), deployed(Some("warren-ws-pool-1a2b3c"))),
        expected,
    );
}

#[test]
fn the_exec_upload_and_model_usage_audit_events_are_stored_as_pinned() {
    let agent = AgentId(id(3));
    let owner = UserId(id(1));
    let requested = AgentEvent::ExecRequested {
        agent_id: agent,
        exec_id: ExecId(id(5)),
        user_id: owner,
        command: "echo hi; exit 3".into(),
        cwd: Some("src".into()),
        timeout_ms: Some(5000),
    };
    let mut expected = json!({
        "id": "00000000-0000-0000-0000-0000000000e1",
        "version": "1",
        "aggregate_id": "00000000-0000-0000-0000-000000000003",
        "command_id": "00000000-0000-0000-0000-0000000000c1",
        "actor": {"kind": "user", "id": "00000000-0000-0000-0000-000000000001"},
        "occurred_at": "2026-01-26T10:30:00Z",
        "type": "ExecRequested",
        "data": {
            "agent_id": "00000000-0000-0000-0000-000000000003",
            "exec_id": "00000000-0000-0000-0000-000000000005",
            "user_id": "00000000-0000-0000-0000-000000000001",
            "command": "echo hi; exit 3",
            "cwd": "src",
            "timeout_ms": 5000
        }
    });
    assert_golden(
        &envelope(agent.0, Actor::User(owner), requested),
        expected.clone(),
    );

    let finished = AgentEvent::ExecFinished {
        agent_id: agent,
        exec_id: ExecId(id(5)),
        exit_code: None,
        signal: None,
        timed_out: false,
        failure: Some(ExecFailure::ClientGone),
    };
    expected["actor"] = json!({"kind": "system", "id": "edge"});
    expected["type"] = json!("ExecFinished");
    expected["data"] = json!({
        "agent_id": "00000000-0000-0000-0000-000000000003",
        "exec_id": "00000000-0000-0000-0000-000000000005",
        "exit_code": null,
        "signal": null,
        "timed_out": false,
        "failure": "client_gone"
    });
    assert_golden(
        &envelope(agent.0, Actor::System("edge".into()), finished),
        expected.clone(),
    );

    let uploaded = AgentEvent::FileUploaded {
        agent_id: agent,
        user_id: owner,
        path: "data/input.csv".into(),
        size: 1234,
    };
    expected["actor"] = json!({"kind": "user", "id": "00000000-0000-0000-0000-000000000001"});
    expected["type"] = json!("FileUploaded");
    expected["data"] = json!({
        "agent_id": "00000000-0000-0000-0000-000000000003",
        "user_id": "00000000-0000-0000-0000-000000000001",
        "path": "data/input.csv",
        "size": 1234
    });
    assert_golden(
        &envelope(agent.0, Actor::User(owner), uploaded),
        expected.clone(),
    );

    let metered = AgentEvent::ModelUsageMetered {
        agent_id: agent,
        user_id: owner,
        provider: Provider::Anthropic,
        model: "claude-sonnet-4".into(),
        own_key: false,
        input_tokens: 1200,
        output_tokens: 85,
        cached_input_tokens: 900,
    };
    expected["actor"] = json!({"kind": "system", "id": "edge"});
    expected["type"] = json!("ModelUsageMetered");
    expected["data"] = json!({
        "agent_id": "00000000-0000-0000-0000-000000000003",
        "user_id": "00000000-0000-0000-0000-000000000001",
        "provider": "anthropic",
        "model": "claude-sonnet-4",
        "own_key": false,
        "input_tokens": 1200,
        "output_tokens": 85,
        "cached_input_tokens": 900
    });
    expected["version"] = json!("2");
    let mut stored = envelope(agent.0, Actor::System("edge".into()), metered);
    stored.version = "2".into();
    assert_golden(&stored, expected.clone());
    // Version 1 had no cached tokens: it reads as none cached.
    let mut version_1 = expected;
    version_1["version"] = json!("1");
    version_1["data"]
        .as_object_mut()
        .expect("data")
        .remove("cached_input_tokens");
    if let AgentEvent::ModelUsageMetered {
        cached_input_tokens,
        ..
    } = &mut stored.event
    {
        *cached_input_tokens = 0;
    }
    assert_upcast(version_1, &stored);
}

#[test]
fn message_posted_is_stored_as_pinned() {
    let conversation = ConversationId(id(4));
    let event = ConversationEvent::MessagePosted {
        conversation_id: conversation,
        message_id: MessageId(id(5)),
        agent_id: AgentId(id(3)),
        user_id: UserId(id(1)),
        text: "Hello, agent!".into(),
        client_id: Some("ws-7".into()),
        client_kind: Some("cli".into()),
        run_id: RunId(id(6)),
        position: 2,
    };
    assert_golden(
        &envelope(conversation.0, Actor::User(UserId(id(1))), event),
        json!({
            "id": "00000000-0000-0000-0000-0000000000e1",
            "version": "1",
            "aggregate_id": "00000000-0000-0000-0000-000000000004",
            "command_id": "00000000-0000-0000-0000-0000000000c1",
            "actor": {"kind": "user", "id": "00000000-0000-0000-0000-000000000001"},
            "occurred_at": "2026-01-26T10:30:00Z",
            "type": "MessagePosted",
            "data": {
                "conversation_id": "00000000-0000-0000-0000-000000000004",
                "message_id": "00000000-0000-0000-0000-000000000005",
                "agent_id": "00000000-0000-0000-0000-000000000003",
                "user_id": "00000000-0000-0000-0000-000000000001",
                "text": "Hello, agent!",
                "client_id": "ws-7",
                "client_kind": "cli",
                "run_id": "00000000-0000-0000-0000-000000000006",
                "position": 2
            }
        }),
    );
}

#[test]
fn run_completed_is_stored_as_pinned() {
    let conversation = ConversationId(id(4));
    let event = ConversationEvent::RunCompleted {
        conversation_id: conversation,
        run_id: RunId(id(6)),
        reply_id: MessageId(id(7)),
        user_id: UserId(id(1)),
        agent_id: AgentId(id(3)),
        text: "There is one file.".into(),
        tool_calls: vec![ToolCall {
            call_id: "call_1".into(),
            name: "shell".into(),
            args: json!({"cmd": "ls"}),
            output: "README.md\n".into(),
            ok: true,
        }],
        usage: TokenUsage {
            input_tokens: 1200,
            output_tokens: 34,
        },
        duration_ms: 2150,
        model: Some("claude-sonnet-4".into()),
        provider: Some(Provider::Anthropic),
    };
    let version_1 = json!({
        "id": "00000000-0000-0000-0000-0000000000e1",
        "version": "1",
        "aggregate_id": "00000000-0000-0000-0000-000000000004",
        "command_id": "00000000-0000-0000-0000-0000000000c1",
        "actor": {"kind": "system", "id": "chat"},
        "occurred_at": "2026-01-26T10:30:00Z",
        "type": "RunCompleted",
        "data": {
            "conversation_id": "00000000-0000-0000-0000-000000000004",
            "run_id": "00000000-0000-0000-0000-000000000006",
            "reply_id": "00000000-0000-0000-0000-000000000007",
            "user_id": "00000000-0000-0000-0000-000000000001",
            "agent_id": "00000000-0000-0000-0000-000000000003",
            "text": "There is one file.",
            "tool_calls": [{
                "call_id": "call_1",
                "name": "shell",
                "args": {"cmd": "ls"},
                "output": "README.md\n",
                "ok": true
            }],
            "usage": {"input_tokens": 1200, "output_tokens": 34},
            "duration_ms": 2150
        }
    });
    // Version 2 adds the run's model and provider.
    let mut version_2 = version_1.clone();
    version_2["version"] = json!("2");
    version_2["data"]["model"] = json!("claude-sonnet-4");
    version_2["data"]["provider"] = json!("anthropic");
    let mut stored = envelope(conversation.0, Actor::System("chat".into()), event.clone());
    stored.version = "2".into();
    assert_golden(&stored, version_2);
    // A version 1 event is lifted on read: the same run, model and provider unknown.
    let ConversationEvent::RunCompleted {
        model, provider, ..
    } = &mut stored.event
    else {
        unreachable!("a run completion")
    };
    (*model, *provider) = (None, None);
    assert_upcast(version_1, &stored);
}
