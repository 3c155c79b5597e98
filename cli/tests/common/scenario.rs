//! A realistic slice of platform activity written through the command service: a user registers,
//! creates an agent that deploys through its six steps and calls its model through the proxy, and
//! talks to it (queued runs, a cancel, a failure, a completed run with a tool call).

use warren_commands::CommandService;
use warren_commands::store::CommandMeta;
use warren_domain::Actor;
use warren_domain::agent::{AgentCommand, Backend, DeploymentStep, RuntimeKind};
use warren_domain::conversation::{ConversationCommand, PostMode, TokenUsage, ToolCall};
use warren_domain::ids::{AgentId, ConnectionId, ConversationId, MessageId, RunId, UserId};
use warren_domain::user::{ApprovalMode, AuthKind, AuthMethod, Provider, UserCommand};

fn meta(actor: &Actor) -> CommandMeta {
    CommandMeta::new(actor.clone())
}

/// Runs one user's story; panics if any command is refused.
pub async fn user_story(commands: &CommandService, n: usize) {
    let user = UserId::new();
    let actor = Actor::User(user);
    let system = Actor::System("scenario".into());
    let u = user.to_string();
    commands
        .users
        .execute(
            &u,
            UserCommand::RegisterUser {
                user_id: user,
                email: Some(format!("user{n}-{user}@example.test")),
                display_name: Some(format!("User {n}")),
                avatar_url: None,
                auth: AuthMethod {
                    connection_id: ConnectionId::new(),
                    kind: AuthKind::Email,
                    external_id: u.clone(),
                },
                approval: ApprovalMode::Required,
                is_admin: false,
            },
            &meta(&actor),
        )
        .await
        .expect("register");
    commands
        .users
        .execute(&u, UserCommand::ApproveUser, &meta(&system))
        .await
        .expect("approve");
    commands
        .users
        .execute(
            &u,
            UserCommand::UpdateProfile {
                display_name: Some(format!("Renamed {n}")),
                avatar_url: None,
                show_tool_calls: Some(false),
            },
            &meta(&actor),
        )
        .await
        .expect("profile");

    let agent = AgentId::new();
    let a = agent.to_string();
    let deployment = uuid::Uuid::now_v7();
    commands
        .agents
        .execute(
            &a,
            AgentCommand::CreateAgent {
                agent_id: agent,
                owner_id: user,
                name: format!("agent {n}"),
                system_prompt: "You are helpful.".into(),
                model: "test-model".into(),
                runtime: RuntimeKind::Warren,
                backend: Backend::Process,
                host: None,
                deployment_id: deployment,
            },
            &meta(&actor),
        )
        .await
        .expect("create agent");
    for step in DeploymentStep::ALL {
        commands
            .agents
            .execute(
                &a,
                AgentCommand::CompleteDeploymentStep {
                    deployment_id: deployment,
                    step: *step,
                },
                &meta(&system),
            )
            .await
            .expect("step");
    }
    commands
        .agents
        .execute(
            &a,
            AgentCommand::CompleteDeployment {
                deployment_id: deployment,
                endpoint_url: format!("http://127.0.0.1:{}", 9000 + n),
                workspace: None,
            },
            &meta(&system),
        )
        .await
        .expect("deployed");
    // Its runtime called its model through the proxy (ADR 23), as the edge meters it.
    commands
        .agents
        .execute(
            &a,
            AgentCommand::MeterModelUsage {
                provider: Provider::Openrouter,
                model: "test-model".into(),
                own_key: false,
                input_tokens: 100 + n as u64,
                output_tokens: 20,
                cached_input_tokens: 0,
            },
            &meta(&Actor::System("edge".into())),
        )
        .await
        .expect("metered");

    let conversation = ConversationId::new();
    let c = conversation.to_string();
    commands
        .conversations
        .execute(
            &c,
            ConversationCommand::StartConversation {
                conversation_id: conversation,
                user_id: user,
                agent_id: agent,
                title: None,
            },
            &meta(&actor),
        )
        .await
        .expect("start conversation");
    let runs: Vec<RunId> = (0..3).map(|_| RunId::new()).collect();
    for (i, run) in runs.iter().enumerate() {
        commands
            .conversations
            .execute(
                &c,
                ConversationCommand::PostMessage {
                    message_id: MessageId::new(),
                    run_id: *run,
                    text: format!("message {i}"),
                    client_id: Some(format!("client-{i}")),
                    client_kind: Some("test".into()),
                    mode: PostMode::Queue,
                },
                &meta(&actor),
            )
            .await
            .expect("post");
    }
    // The middle one is cancelled while waiting; the first completes; the last fails.
    commands
        .conversations
        .execute(
            &c,
            ConversationCommand::RequestCancel { run_id: runs[1] },
            &meta(&actor),
        )
        .await
        .expect("cancel");
    commands
        .conversations
        .execute(
            &c,
            ConversationCommand::StartRun {
                run_id: runs[0],
                worker_id: "w1".into(),
            },
            &meta(&system),
        )
        .await
        .expect("start run");
    commands
        .conversations
        .execute(
            &c,
            ConversationCommand::CompleteRun {
                run_id: runs[0],
                reply_id: MessageId::new(),
                text: "done".into(),
                tool_calls: vec![ToolCall {
                    call_id: "call_1".into(),
                    name: "shell".into(),
                    args: serde_json::json!({"command": "ls"}),
                    output: "README.md".into(),
                    ok: true,
                }],
                usage: TokenUsage {
                    input_tokens: 120,
                    output_tokens: 40,
                },
                duration_ms: 1500,
                model: None,
                provider: None,
            },
            &meta(&system),
        )
        .await
        .expect("complete run");
    commands
        .conversations
        .execute(
            &c,
            ConversationCommand::StartRun {
                run_id: runs[2],
                worker_id: "w2".into(),
            },
            &meta(&system),
        )
        .await
        .expect("start run 3");
    commands
        .conversations
        .execute(
            &c,
            ConversationCommand::FailRun {
                run_id: runs[2],
                code: "model_error".into(),
                message: "boom".into(),
                retryable: true,
            },
            &meta(&system),
        )
        .await
        .expect("fail run");
}

/// Every read-model table, dumped as ordered JSON rows (the migrations table excluded: it records
/// when each schema was migrated).
pub async fn dump(db: &sqlx::PgPool, schema: &str) -> Vec<(String, Vec<serde_json::Value>)> {
    let tables: Vec<(String,)> = sqlx::query_as(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1 \
         AND table_name <> '_sqlx_migrations' ORDER BY table_name",
    )
    .bind(schema)
    .fetch_all(db)
    .await
    .expect("tables");
    let mut out = Vec::new();
    for (table,) in tables {
        let sql = format!(
            "SELECT to_jsonb(t) FROM \"{schema}\".\"{table}\" t ORDER BY to_jsonb(t)::text"
        );
        let rows: Vec<(serde_json::Value,)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .fetch_all(db)
            .await
            .expect("rows");
        out.push((table, rows.into_iter().map(|(v,)| v).collect()));
    }
    out
}

/// Where two [`dump`]s differ, table by table: the rows only the first holds and the rows only
/// the second holds; empty when they are equal.
pub fn differences(
    left: &[(String, Vec<serde_json::Value>)],
    right: &[(String, Vec<serde_json::Value>)],
) -> String {
    let mut out = String::new();
    let tables: std::collections::BTreeSet<&String> =
        left.iter().chain(right).map(|(table, _)| table).collect();
    fn rows<'a>(
        dump: &'a [(String, Vec<serde_json::Value>)],
        table: &str,
    ) -> Option<&'a Vec<serde_json::Value>> {
        dump.iter()
            .find(|(name, _)| name == table)
            .map(|(_, rows)| rows)
    }
    for table in tables {
        let (Some(l), Some(r)) = (rows(left, table), rows(right, table)) else {
            out.push_str(&format!("table {table}: only on one side\n"));
            continue;
        };
        let only_left: Vec<_> = l.iter().filter(|row| !r.contains(row)).collect();
        let only_right: Vec<_> = r.iter().filter(|row| !l.contains(row)).collect();
        if only_left.is_empty() && only_right.is_empty() && l.len() == r.len() {
            continue;
        }
        out.push_str(&format!(
            "table {table} ({} vs {} rows):\n",
            l.len(),
            r.len()
        ));
        for row in only_left {
            out.push_str(&format!("  only in the first:  {row}\n"));
        }
        for row in only_right {
            out.push_str(&format!("  only in the second: {row}\n"));
        }
    }
    out
}
