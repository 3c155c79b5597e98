//! The `warren` client end to end, on a pseudo-terminal like a person would use it, against the
//! real `warren dev` (with real `warren-agent` runtimes and the scripted model server): sign-in
//! by the emailed code, `agents create --wait` drawing the six steps, an interactive chat that
//! streams a reply and a tool call, Ctrl-C cancelling a running tool (its process gone),
//! `--json` output for scripts, and `chat --fork` continuing a session from a message.

mod chat_support;
mod client_support;
mod common;
mod edge_support;

use chat_support::{Chat, agent_bin, alive};
use client_support::Client;
use edge_support::{Platform, Session};
use serde_json::{Value, json};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;
use warren_testkit::model_server::{ModelServer, Reply};
use warren_testkit::wait_until;

const TIMEOUT: Duration = Duration::from_secs(30);

/// The scripted model server and a platform with open sign-up whose agents run
/// `warren-agent` against it, with `extra` settings.
async fn open_platform(extra: &[(&str, &str)]) -> (ModelServer, Platform) {
    let model = ModelServer::start().await;
    let (model_url, agent_bin) = (model.url(), agent_bin().display().to_string());
    let mut settings = vec![
        ("WARREN_APPROVAL", "open"),
        ("WARREN_AGENT_BIN", agent_bin.as_str()),
        ("WARREN_DEFAULT_PROVIDER", "openai"),
        ("WARREN_DEFAULT_BASE_URL", model_url.as_str()),
        ("WARREN_DEFAULT_API_KEY", "sk-platform"),
    ];
    settings.extend_from_slice(extra);
    let platform = Platform::start(&settings).await;
    (model, platform)
}

/// Each line of `output` as JSON (panics naming a line that is not).
fn json_lines(output: &str) -> Vec<Value> {
    output
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|err| panic!("not JSON ({err}): {line}"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn login_by_emailed_code_keeps_the_tokens_owner_only_and_the_first_user_is_told_they_are_admin()
 {
    let platform = Platform::start(&[("WARREN_ADMIN_EMAILS", "")]).await;
    let client = Client::new(&platform.base);
    let mut login = client.login(&platform, "ada@example.com").await;
    login.expect("you are its admin");
    assert_eq!(login.exit_code(), 0);

    let credentials = client.client_dir().join("credentials.json");
    let mode = std::fs::metadata(&credentials)
        .expect("credentials saved")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "credentials must be owner-only");
    // The saved sign-in works: a command that needs it answers, as JSON that parses.
    let (_, out) = client.output(&["agents", "list", "--json"]);
    let agents: Value = serde_json::from_str(&out).expect("agents list --json is JSON");
    assert_eq!(agents, json!([]));
}

#[tokio::test(flavor = "multi_thread")]
async fn agents_create_wait_shows_each_of_the_six_steps_until_the_agent_runs() {
    let chat = Chat::start(&[("WARREN_TIER_FREE_MAX_AGENTS", "3")]).await;
    let client = Client::new(&chat.platform.base);
    client.login(&chat.platform, "chatter@example.com").await;

    let mut create = client.pty(&["agents", "create", "Builder", "--wait"]);
    for (n, step) in [
        "allocating",
        "provisioning",
        "installing",
        "configuring",
        "starting",
        "health_check",
    ]
    .iter()
    .enumerate()
    {
        create.expect(&format!("{}/6 {step}", n + 1));
    }
    create.expect("Builder is running");
    assert_eq!(create.exit_code(), 0);

    let (_, out) = client.output(&["agents", "list", "--json"]);
    let agents: Value = serde_json::from_str(&out).expect("agents list --json is JSON");
    let builder = agents
        .as_array()
        .and_then(|all| all.iter().find(|a| a["name"] == "Builder"))
        .unwrap_or_else(|| panic!("no Builder in {agents}"));
    assert_eq!(builder["status"], "running", "{builder}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_interactive_chat_streams_a_tool_call_and_ctrl_c_cancels_the_running_tool_and_a_second_exits()
 {
    let chat = Chat::start(&[]).await;
    let client = Client::new(&chat.platform.base);
    client.login(&chat.platform, "chatter@example.com").await;

    // A tool call whose output differs from its command, then a streamed answer.
    chat.model.push(Reply::tool_call(
        "shell",
        json!({"command": "echo tool-said-$((40 + 2))"}),
    ));
    chat.model.push(Reply::text("All done here."));
    let mut session = client.pty(&["chat", "Helper", "--interactive"]);
    session.expect("> ");
    session.send_line("run the tool");
    session.expect("🔧 shell");
    session.expect("✓ tool-said-42");
    session.expect("All done here.");
    session.expect("> ");

    // A tool that would run for five minutes: Ctrl-C cancels the run and its process goes.
    chat.model.push(Reply::tool_call(
        "shell",
        json!({"command": "echo $$ > tool.pid; exec sleep 300"}),
    ));
    session.send_line("sleep a long time");
    session.expect("🔧 shell");
    let pid = chat.tool_pid("tool.pid").await;
    assert!(alive(pid), "the tool runs");
    session.ctrl_c();
    session.expect("cancelled");
    wait_until(TIMEOUT, || async { !alive(pid) }).await;
    // One Ctrl-C cancels the run only: the chat goes on. Two in a row leave (the run is
    // cancelled all the same).
    session.expect("> ");
    chat.model.push(Reply::tool_call(
        "shell",
        json!({"command": "echo $$ > tool2.pid; exec sleep 300"}),
    ));
    session.send_line("sleep again");
    session.expect("🔧 shell");
    let pid = chat.tool_pid("tool2.pid").await;
    session.ctrl_c();
    session.expect("Ctrl-C again to exit");
    session.ctrl_c();
    // Whether it lands while the cancel is under way (130) or at the prompt once the run is
    // cancelled (0), the second Ctrl-C ends the client.
    let code = session.exit_code();
    assert!(code == 130 || code == 0, "exit code {code}");
    wait_until(TIMEOUT, || async { !alive(pid) }).await;

    // For scripts: the last session again, every event one JSON line, ending with the reply.
    chat.model.push(Reply::text("JSON reply."));
    let (_, out) = client.output(&["chat", "--json", "hello json"]);
    let events = json_lines(&out);
    let last = events.last().unwrap_or_else(|| panic!("no events: {out}"));
    assert_eq!(last["type"], "event", "{last}");
    assert_eq!(last["event"], "final", "{last}");
    assert_eq!(last["payload"]["content"], "JSON reply.", "{last}");
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "token" && e["seq"].as_u64().is_some()),
        "tokens stream with their seq: {out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reply_outliving_the_access_token_streams_whole_through_a_silent_refresh_and_resume() {
    // Access tokens live 3 s: the gateway ends the socket before the run ends
    // (`token_expired`), and the client must refresh, reconnect and resume after the last `seq`
    // it showed to see the run to its end.
    let (model, platform) = open_platform(&[("WARREN_ACCESS_TOKEN_TTL_SECS", "3")]).await;
    let client = Client::new(&platform.base);
    client.login(&platform, "patient@example.com").await;
    let saved_refresh = || -> String {
        let text = std::fs::read_to_string(client.client_dir().join("credentials.json"))
            .expect("credentials saved");
        let saved: Value = serde_json::from_str(&text).expect("credentials are JSON");
        saved["refresh_token"]
            .as_str()
            .expect("a refresh token")
            .to_owned()
    };
    let (_, out) = client.output(&["agents", "create", "Helper", "--wait", "--json"]);
    let agent_id = json_lines(&out)
        .last()
        .and_then(|agent| agent["id"].as_str().map(str::to_owned))
        .unwrap_or_else(|| panic!("no agent in {out}"));
    let chat = Chat {
        platform,
        model,
        user: Session {
            access: String::new(),
            refresh: String::new(),
        },
        agent_id,
    };

    let words: Vec<String> = (1..=16).map(|n| format!("word{n}")).collect();
    let reply = words.join(" ");
    chat.model
        .push(Reply::text(reply.clone()).with_chunk_delay(Duration::from_millis(400)));
    let before = saved_refresh();
    let mut run = client.pty(&["chat", "Helper", "tell me slowly"]);
    // Every word once, in order, and the run's end: nothing lost or repeated across sockets.
    run.expect(&reply);
    assert_eq!(run.exit_code(), 0, "the run completed");
    assert_ne!(saved_refresh(), before, "the pair was rotated and saved");
}

#[tokio::test(flavor = "multi_thread")]
async fn chat_fork_continues_a_session_from_a_message_with_exactly_the_history_up_to_it() {
    let (model, platform) = open_platform(&[]).await;
    let client = Client::new(&platform.base);
    client.login(&platform, "brancher@example.com").await;
    let (created, out) = client.output(&["agents", "create", "Helper", "--wait", "--json"]);
    assert!(created, "{out}");
    for (question, answer) in [
        ("First question", "First answer."),
        ("Second question", "Second answer."),
    ] {
        model.push(Reply::text(answer));
        let (ok, out) = client.output(&["chat", "Helper", "--json", question]);
        assert!(ok, "{out}");
    }
    let saved: Value = serde_json::from_str(
        &std::fs::read_to_string(client.client_dir().join("credentials.json"))
            .expect("credentials saved"),
    )
    .expect("credentials are JSON");
    let access = saved["access_token"].as_str().expect("an access token");
    let listed = platform.get("/api/v1/conversations", Some(access)).await;
    let origin = listed.body[0]["id"].as_str().expect("a session").to_owned();
    let messages = platform
        .get(
            &format!("/api/v1/conversations/{origin}/messages"),
            Some(access),
        )
        .await;
    let first_answer = messages.body[1]["seq"].as_u64().expect("a seq");

    model.push(Reply::text("Fork answer."));
    let before = model.request_count();
    let fork = format!("{origin}@{first_answer}");
    let (ok, out) = client.output(&["chat", "--fork", &fork, "--json", "Fork question"]);
    assert!(ok, "{out}");
    let sent = &model.recorded()[before].body;
    let dialogue: Vec<(String, String)> = sent["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter(|m| m["role"] != "system")
        .map(|m| {
            let text = |key: &str| m[key].as_str().unwrap_or_default().to_owned();
            (text("role"), text("content"))
        })
        .collect();
    let said = |role: &str, text: &str| (role.to_owned(), text.to_owned());
    assert_eq!(
        dialogue,
        [
            said("user", "First question"),
            said("assistant", "First answer."),
            said("user", "Fork question"),
        ],
        "the fork's run saw the history up to the fork point"
    );
    let refused = client
        .command(&["chat", "--fork", "nonsense", "hello"])
        .output()
        .expect("run warren");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && stderr.contains("SESSION@SEQ"),
        "a fork point without @SEQ is refused in words: {stderr}"
    );
}
