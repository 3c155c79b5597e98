//! `warren export` reads the log itself: a scripted history of two users' agents, metered model
//! calls, a message and a completed run comes out of the real binary as exact CSV, JSON Lines
//! and Parquet rows with their costs; a window still knows owners taught before it; a file cut
//! mid-row and resumed is the file one run writes; and `export events` is the stream's commits.
//!
//! Only a nats-server: an export needs no database.

use chrono::{DateTime, SecondsFormat, Utc};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;
use serde_json::{Value, json};
use std::path::Path;
use warren_commands::topology::{self, LogSettings};
use warren_commands::{CommandMeta, CommandService};
use warren_domain::Actor;
use warren_domain::agent::{AgentCommand, Backend, RuntimeKind};
use warren_domain::conversation::{ConversationCommand, PostMode, TokenUsage, ToolCall};
use warren_domain::ids::{AgentId, ConnectionId, ConversationId, MessageId, RunId, UserId};
use warren_domain::user::{ApprovalMode, AuthKind, AuthMethod, Provider, UserCommand};
use warren_testkit::TestNats;

/// The price table the exports read: openrouter's test-model only.
const PRICES: &str = r#"
[[prices]]
provider = "openrouter"
model = "test-model"
from = "2020-01-01"
input_per_million = 2.0
output_per_million = 10.0
cached_input_per_million = 0.5
"#;

/// Who and what the history is about, and an instant between its first and its second half.
struct History {
    alice: UserId,
    bob: UserId,
    alices_agent: AgentId,
    bobs_agent: AgentId,
    middle: DateTime<Utc>,
}

fn system() -> CommandMeta {
    CommandMeta::new(Actor::System("test".into()))
}

async fn register(commands: &CommandService) -> UserId {
    let user = UserId::new();
    commands
        .users
        .execute(
            &user.to_string(),
            UserCommand::RegisterUser {
                user_id: user,
                email: None,
                display_name: None,
                avatar_url: None,
                auth: AuthMethod {
                    connection_id: ConnectionId::new(),
                    kind: AuthKind::Email,
                    external_id: user.to_string(),
                },
                approval: ApprovalMode::Open,
                is_admin: false,
            },
            &CommandMeta::new(Actor::User(user)),
        )
        .await
        .expect("register");
    user
}

async fn create_agent(commands: &CommandService, owner: UserId, backend: Backend) -> AgentId {
    let agent = AgentId::new();
    commands
        .agents
        .execute(
            &agent.to_string(),
            AgentCommand::CreateAgent {
                agent_id: agent,
                owner_id: owner,
                name: "helper".into(),
                system_prompt: String::new(),
                model: "test-model".into(),
                runtime: RuntimeKind::Warren,
                backend,
                host: None,
                deployment_id: uuid::Uuid::now_v7(),
            },
            &CommandMeta::new(Actor::User(owner)),
        )
        .await
        .expect("create agent");
    agent
}

async fn meter(
    commands: &CommandService,
    agent: AgentId,
    (provider, model): (Provider, &str),
    [input, cached, output]: [u64; 3],
) {
    commands
        .agents
        .execute(
            &agent.to_string(),
            AgentCommand::MeterModelUsage {
                provider,
                model: model.into(),
                own_key: false,
                input_tokens: input,
                output_tokens: output,
                cached_input_tokens: cached,
            },
            &CommandMeta::new(Actor::System("edge".into())),
        )
        .await
        .expect("meter");
}

/// Agents 1..5: Alice's (process) and Bob's (docker) created, a priced call of Alice's agent;
/// then (after `middle`) another priced call and an unpriced one of Bob's. Conversations 1..4:
/// Alice starts a conversation, posts, and the run completes with two tool calls.
async fn history(commands: &CommandService) -> History {
    let alice = register(commands).await;
    let bob = register(commands).await;
    let alices_agent = create_agent(commands, alice, Backend::Process).await;
    let bobs_agent = create_agent(commands, bob, Backend::Docker).await;
    let priced = (Provider::Openrouter, "test-model");
    meter(commands, alices_agent, priced, [1000, 400, 200]).await;
    let middle = Utc::now();
    meter(commands, alices_agent, priced, [250_000, 0, 50_000]).await;
    meter(
        commands,
        bobs_agent,
        (Provider::Anthropic, "unpriced-model"),
        [10, 0, 5],
    )
    .await;

    let conversation = ConversationId::new();
    let c = conversation.to_string();
    let run = RunId::new();
    let conversations = &commands.conversations;
    // A meta per command: its command id is the commit's dedupe id.
    let as_alice = || CommandMeta::new(Actor::User(alice));
    conversations
        .execute(
            &c,
            ConversationCommand::StartConversation {
                conversation_id: conversation,
                user_id: alice,
                agent_id: alices_agent,
                title: None,
            },
            &as_alice(),
        )
        .await
        .expect("start");
    conversations
        .execute(
            &c,
            ConversationCommand::PostMessage {
                message_id: MessageId::new(),
                run_id: run,
                text: "list the files".into(),
                client_id: None,
                client_kind: None,
                mode: PostMode::Queue,
            },
            &as_alice(),
        )
        .await
        .expect("post");
    conversations
        .execute(
            &c,
            ConversationCommand::StartRun {
                run_id: run,
                worker_id: "w1".into(),
            },
            &system(),
        )
        .await
        .expect("start run");
    let tool = |name: &str| ToolCall {
        call_id: format!("call_{name}"),
        name: name.into(),
        args: json!({}),
        output: String::new(),
        ok: true,
    };
    conversations
        .execute(
            &c,
            ConversationCommand::CompleteRun {
                run_id: run,
                reply_id: MessageId::new(),
                text: "README.md".into(),
                tool_calls: vec![tool("shell"), tool("read_file")],
                usage: TokenUsage {
                    input_tokens: 120,
                    output_tokens: 40,
                },
                duration_ms: 1500,
                model: Some("test-model".into()),
                provider: Some(Provider::Openrouter),
            },
            &system(),
        )
        .await
        .expect("complete run");
    History {
        alice,
        bob,
        alices_agent,
        bobs_agent,
        middle,
    }
}

/// What `warren <args>` printed, run against `nats` with the prices of `dir`.
struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

async fn warren(nats: &TestNats, dir: &Path, args: &[&str]) -> Run {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_warren"))
        .args(args)
        .env_remove("WARREN_DATABASE_URL")
        .envs(nats.warren_env())
        .env("WARREN_CONFIG", dir.join("warren.toml"))
        .env("WARREN_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("warren runs");
    Run {
        ok: output.status.success(),
        stdout: String::from_utf8(output.stdout).expect("utf-8"),
        stderr: String::from_utf8(output.stderr).expect("utf-8"),
    }
}

async fn export_ok(nats: &TestNats, dir: &Path, args: &[&str]) -> String {
    let run = warren(nats, dir, args).await;
    assert!(run.ok, "warren {args:?} failed: {}", run.stderr);
    run.stderr
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

fn jsonl(text: &str) -> Vec<Value> {
    text.lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect()
}

/// A row without what the log chose (its event's id and time).
fn chosen(row: &Value) -> Value {
    let mut row = row.clone();
    let object = row.as_object_mut().expect("an object");
    object.remove("event_id");
    object.remove("at");
    row
}

#[allow(clippy::too_many_arguments)]
fn expected(
    stream: &str,
    seq: u64,
    user: UserId,
    agent: AgentId,
    kind: &str,
    call: Option<(&str, &str, [u64; 3])>,
    sandbox: Option<&str>,
    cost_usd: Option<f64>,
) -> Value {
    let (provider, model, [input, cached, output]) = match call {
        Some((provider, model, tokens)) => (Some(provider), Some(model), tokens),
        None => (None, None, [0; 3]),
    };
    json!({
        "stream": stream, "seq": seq, "user_id": user, "agent_id": agent, "kind": kind,
        "provider": provider, "model": model, "input_tokens": input, "output_tokens": output,
        "cached_tokens": cached, "tools": [], "tool_calls": 0, "duration_ms": 0,
        "outcome": null, "bytes": 0, "sandbox": sandbox, "cost_usd": cost_usd,
    })
}

/// Every row of the history, as the JSON Lines export writes them (less ids and times).
fn all_rows(h: &History) -> Vec<Value> {
    let priced = |tokens| Some(("openrouter", "test-model", tokens));
    let (docker, process) = (Some("docker"), Some("process"));
    let mut run = expected(
        "CONVERSATIONS",
        4,
        h.alice,
        h.alices_agent,
        "run",
        priced([120, 0, 40]),
        None,
        None,
    );
    run["tools"] = json!(["shell", "read_file"]);
    run["tool_calls"] = json!(2);
    run["duration_ms"] = json!(1500);
    run["outcome"] = json!("completed");
    vec![
        expected(
            "AGENTS",
            1,
            h.alice,
            h.alices_agent,
            "deployment",
            None,
            process,
            None,
        ),
        expected(
            "AGENTS",
            2,
            h.bob,
            h.bobs_agent,
            "deployment",
            None,
            docker,
            None,
        ),
        // (1000 - 400) × 2 + 400 × 0.5 + 200 × 10 micro-dollars.
        expected(
            "AGENTS",
            3,
            h.alice,
            h.alices_agent,
            "model_call",
            priced([1000, 400, 200]),
            process,
            Some(0.0034),
        ),
        expected(
            "AGENTS",
            4,
            h.alice,
            h.alices_agent,
            "model_call",
            priced([250_000, 0, 50_000]),
            process,
            Some(1.0),
        ),
        expected(
            "AGENTS",
            5,
            h.bob,
            h.bobs_agent,
            "model_call",
            Some(("anthropic", "unpriced-model", [10, 0, 5])),
            docker,
            None,
        ),
        expected(
            "CONVERSATIONS",
            2,
            h.alice,
            h.alices_agent,
            "message",
            None,
            None,
            None,
        ),
        run,
    ]
}

/// A JSON Lines row as the CSV export writes it.
fn csv_line(row: &Value) -> String {
    let field = |value: &Value| -> String {
        let text = match value {
            Value::Null => String::new(),
            Value::String(text) => text.clone(),
            Value::Array(items) => items
                .iter()
                .map(|item| item.as_str().expect("a tool name"))
                .collect::<Vec<_>>()
                .join(","),
            other => other.to_string(),
        };
        if text.contains(',') {
            format!("\"{text}\"")
        } else {
            text
        }
    };
    let object = row.as_object().expect("an object");
    let header = "stream,seq,event_id,at,user_id,agent_id,kind,provider,model,input_tokens,\
                  output_tokens,cached_tokens,tools,tool_calls,duration_ms,outcome,bytes,sandbox,cost_usd";
    header
        .split(',')
        .map(|column| match (column, &object[column]) {
            ("cost_usd", Value::Number(cost)) => {
                format!("{}", cost.as_f64().expect("a number"))
            }
            (_, value) => field(value),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// A Parquet file's rows, each as the JSON Lines export writes it.
fn parquet_rows(path: &Path) -> Vec<Value> {
    let file = std::fs::File::open(path).expect("the parquet file");
    let reader = SerializedFileReader::new(file).expect("a parquet file");
    let rows = reader.get_row_iter(None).expect("its rows");
    rows.map(|row| {
        let row = row.expect("a row");
        let object = row
            .get_column_iter()
            .map(|(name, field)| {
                let value = match (name.as_str(), field) {
                    (_, Field::Null) => Value::Null,
                    ("tools", Field::Str(tools)) => {
                        json!(
                            tools
                                .split(',')
                                .filter(|t| !t.is_empty())
                                .collect::<Vec<_>>()
                        )
                    }
                    (_, Field::Str(text)) => json!(text),
                    (_, Field::Long(n)) => json!(n),
                    (_, Field::Double(x)) => json!(x),
                    (_, Field::TimestampMicros(micros)) => {
                        let at = DateTime::from_timestamp_micros(*micros).expect("a time");
                        json!(at.to_rfc3339_opts(SecondsFormat::AutoSi, true))
                    }
                    (name, other) => panic!("column {name} holds {other:?}"),
                };
                (name.clone(), value)
            })
            .collect::<serde_json::Map<_, _>>();
        Value::Object(object)
    })
    .collect()
}

/// `at` to the microsecond, as Parquet stores it.
fn to_micros(rows: &[Value]) -> Vec<Value> {
    rows.iter()
        .map(|row| {
            let mut row = row.clone();
            let at: DateTime<Utc> = row["at"]
                .as_str()
                .expect("a time")
                .parse()
                .expect("RFC 3339");
            let micros = DateTime::from_timestamp_micros(at.timestamp_micros()).expect("a time");
            row["at"] = json!(micros.to_rfc3339_opts(SecondsFormat::AutoSi, true));
            row
        })
        .collect()
}

/// Each commit of `stream` as `export events` writes it: a line per envelope.
async fn commits(js: &async_nats::jetstream::Context, stream: &str) -> Vec<Value> {
    let stream = js.get_stream(stream).await.expect("the stream");
    let last = stream.cached_info().state.last_sequence;
    let mut lines = Vec::new();
    for seq in 1..=last {
        let message = stream.get_raw_message(seq).await.expect("a commit");
        let envelopes: Vec<Value> =
            serde_json::from_slice(&message.payload).expect("an array of envelopes");
        for mut envelope in envelopes {
            warren_commands::codec::upcast(&mut envelope);
            lines.push(json!({
                "stream": stream.cached_info().config.name,
                "seq": seq,
                "subject": message.subject.as_str(),
                "envelope": envelope,
            }));
        }
    }
    lines
}

/// Cuts `path` to `len` bytes, as a crash mid-write leaves it.
fn cut(path: &Path, len: usize) {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("the file");
    file.set_len(len as u64).expect("cut");
}

#[tokio::test]
async fn exports_are_the_logs_usage_priced_resumable_and_its_raw_commits() {
    let nats = TestNats::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    std::fs::write(d.join("warren.toml"), PRICES).expect("the config file");
    let js = nats.jetstream().await;
    let commands = CommandService::start(js.clone(), &LogSettings::default())
        .await
        .expect("commands");
    let h = history(&commands).await;
    let path = |name: &str| d.join(name);
    let arg = |name: &str| path(name).display().to_string();

    // Every fact, as JSON Lines: exact rows, and their sums.
    let summary = export_ok(
        &nats,
        d,
        &["export", "usage", "--output", &arg("all.jsonl")],
    )
    .await;
    assert!(
        summary.contains("exported 7 rows from agents 1..5, conversations 1..4"),
        "{summary}"
    );
    let rows = jsonl(&read(&path("all.jsonl")));
    assert_eq!(rows.iter().map(chosen).collect::<Vec<_>>(), all_rows(&h));
    let cost: f64 = rows.iter().filter_map(|row| row["cost_usd"].as_f64()).sum();
    assert!((cost - 1.0034).abs() < 1e-9, "the priced calls cost {cost}");
    let input: u64 = rows
        .iter()
        .filter(|row| row["kind"] == "model_call")
        .map(|row| row["input_tokens"].as_u64().expect("tokens"))
        .sum();
    assert_eq!(input, 251_010);

    // Each row's id, time and place are its envelope's in the log.
    let agents = commits(&js, topology::AGENTS).await;
    let conversations = commits(&js, topology::CONVERSATIONS).await;
    for row in &rows {
        let envelope = agents
            .iter()
            .chain(&conversations)
            .find(|line| line["envelope"]["id"] == row["event_id"])
            .unwrap_or_else(|| panic!("no envelope of {row}"));
        assert_eq!(
            (&envelope["stream"], &envelope["seq"]),
            (&row["stream"], &row["seq"])
        );
        let at: DateTime<Utc> = envelope["envelope"]["occurred_at"]
            .as_str()
            .and_then(|at| at.parse().ok())
            .expect("a time");
        assert_eq!(
            row["at"],
            json!(at.to_rfc3339_opts(SecondsFormat::AutoSi, true))
        );
    }

    // The same rows as CSV and as Parquet (read back with the parquet crate).
    export_ok(&nats, d, &["export", "usage", "--output", &arg("all.csv")]).await;
    let csv = read(&path("all.csv"));
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some(
            "stream,seq,event_id,at,user_id,agent_id,kind,provider,model,input_tokens,\
             output_tokens,cached_tokens,tools,tool_calls,duration_ms,outcome,bytes,sandbox,cost_usd"
        )
    );
    assert_eq!(
        lines.map(str::to_owned).collect::<Vec<_>>(),
        rows.iter().map(csv_line).collect::<Vec<_>>()
    );
    let parquet_args = ["export", "usage", "--format", "parquet", "--output"];
    export_ok(&nats, d, &[&parquet_args[..], &[&arg("all.data")]].concat()).await;
    assert_eq!(parquet_rows(&path("all.data")), to_micros(&rows));
    assert!(!path("all.data.partial").exists());

    // A window: facts from `middle` on still carry the sandbox Alice's agent was created with;
    // facts before it are the others.
    let middle = h.middle.to_rfc3339_opts(SecondsFormat::Nanos, true);
    let from = ["export", "usage", "--from", &middle, "--output"];
    export_ok(&nats, d, &[&from[..], &[&arg("late.jsonl")]].concat()).await;
    let to = ["export", "usage", "--to", &middle, "--output"];
    export_ok(&nats, d, &[&to[..], &[&arg("early.jsonl")]].concat()).await;
    let (late, early) = (
        jsonl(&read(&path("late.jsonl"))),
        jsonl(&read(&path("early.jsonl"))),
    );
    assert_eq!(
        late.iter().map(chosen).collect::<Vec<_>>(),
        all_rows(&h)[3..]
    );
    assert_eq!(
        early.iter().map(chosen).collect::<Vec<_>>(),
        all_rows(&h)[..3]
    );
    let whole_day = [
        "export",
        "usage",
        "--from",
        "2020-01-01",
        "--to",
        "2020-01-02",
        "--output",
    ];
    export_ok(&nats, d, &[&whole_day[..], &[&arg("none.csv")]].concat()).await;
    assert_eq!(read(&path("none.csv")).lines().count(), 1, "a header only");

    // An existing file is not overwritten; a parquet export does not resume.
    let again = warren(&nats, d, &["export", "usage", "--output", &arg("all.csv")]).await;
    assert!(
        !again.ok && again.stderr.contains("exists; pass --resume or remove it"),
        "{}",
        again.stderr
    );
    let parquet_output = arg("x.parquet");
    let resume_parquet = [&parquet_args[..], &[&parquet_output, "--resume"]].concat();
    let refused = warren(&nats, d, &resume_parquet).await;
    assert!(
        !refused.ok
            && refused
                .stderr
                .contains("--resume works for csv and jsonl only"),
        "{}",
        refused.stderr
    );

    // Cut anywhere (mid-header, mid-row, between rows of one commit, at the end), an export
    // resumed is the export of one run.
    let whole = [
        ("all.csv", csv.clone()),
        ("all.jsonl", read(&path("all.jsonl"))),
    ];
    for (name, text) in &whole {
        let lengths = [0, 10, text.len() / 2, text.len() - 1, text.len()];
        for (i, len) in lengths.into_iter().enumerate() {
            let resumed = path(&format!("resumed-{i}-{name}"));
            std::fs::write(&resumed, &text.as_bytes()[..len]).expect("a cut copy");
            let resumed = resumed.display().to_string();
            export_ok(
                &nats,
                d,
                &["export", "usage", "--resume", "--output", &resumed],
            )
            .await;
            assert_eq!(
                &read(Path::new(&resumed)),
                text,
                "{name} cut at {len} and resumed"
            );
        }
    }

    // Raw envelopes: a line per envelope of each commit (an agent's creation is two), to stdout
    // or to a file, resumed after a cut between the two lines of one commit.
    for stream in ["users", "agents", "CONVERSATIONS"] {
        let name = format!("{stream}.jsonl");
        let summary = export_ok(
            &nats,
            d,
            &[
                "export",
                "events",
                "--stream",
                stream,
                "--output",
                &arg(&name),
            ],
        )
        .await;
        let expected = commits(&js, &stream.to_uppercase()).await;
        assert_eq!(jsonl(&read(&path(&name))), expected, "{stream}");
        assert!(
            summary.contains(&format!("exported {} events", expected.len())),
            "{summary}"
        );
    }
    let stdout = warren(
        &nats,
        d,
        &[
            "export",
            "events",
            "--stream",
            "agents",
            "--from-seq",
            "3",
            "--to-seq",
            "4",
            "--output",
            "-",
        ],
    )
    .await;
    assert!(stdout.ok, "{}", stdout.stderr);
    let seqs: Vec<u64> = jsonl(&stdout.stdout)
        .iter()
        .map(|line| line["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(seqs, [3, 4]);
    // From a time: the commits stored from then on (the last two calls).
    let since = warren(
        &nats,
        d,
        &[
            "export",
            "events",
            "--stream",
            "agents",
            "--from-time",
            &middle,
            "--output",
            "-",
        ],
    )
    .await;
    assert!(since.ok, "{}", since.stderr);
    let seqs: Vec<u64> = jsonl(&since.stdout)
        .iter()
        .map(|line| line["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(seqs, [4, 5]);
    let agents_text = read(&path("agents.jsonl"));
    let first_line = agents_text.find('\n').expect("a line") + 1;
    assert_eq!(
        agents[1]["seq"], 1,
        "an agent's creation is one commit of two envelopes"
    );
    for len in [first_line, first_line + 7] {
        cut(&path("agents.jsonl"), len);
        export_ok(
            &nats,
            d,
            &[
                "export",
                "events",
                "--stream",
                "agents",
                "--resume",
                "--output",
                &arg("agents.jsonl"),
            ],
        )
        .await;
        assert_eq!(
            read(&path("agents.jsonl")),
            agents_text,
            "cut at {len} and resumed"
        );
    }
}
