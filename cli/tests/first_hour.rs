//! A newcomer's first hour: who administers a fresh platform, a configuration changed later
//! (an admin address, open approval) reaching users who signed up before it, and a platform
//! with no model provider (or one it cannot reach) saying so, in the log and in the run, and
//! a run that gave no answer showing in the conversation's history with its reason, and agent
//! runtimes that follow the platform's settings and `warren dev`'s own lifetime; and every
//! role's `--help` listing the options and variables it reads, with their defaults.

mod chat_support;
mod common;
mod edge_support;
mod gateway_support;

use chat_support::Chat;
use edge_support::Platform;
use gateway_support::Ws;
use serde_json::{Value, json};
use std::time::Duration;
use warren_testkit::{ModelServer, Reply, wait_for};

async fn verify(platform: &Platform, base: &str, email: &str) -> serde_json::Value {
    let mail = platform.request_link(email).await;
    let answer = platform
        .http
        .post(format!("{base}/api/v1/auth/verify-magic-link"))
        .json(&json!({ "token": edge_support::link_token(&mail) }))
        .send()
        .await
        .expect("verify");
    assert_eq!(answer.status().as_u16(), 200);
    answer.json().await.expect("json")
}

async fn me(platform: &Platform, base: &str, access: &str) -> serde_json::Value {
    platform
        .http
        .get(format!("{base}/api/v1/users/me"))
        .bearer_auth(access)
        .send()
        .await
        .expect("me")
        .json()
        .await
        .expect("json")
}

#[tokio::test]
async fn the_first_person_to_sign_in_on_a_platform_without_admins_becomes_its_admin() {
    let platform = Platform::start(&[("WARREN_ADMIN_EMAILS", "")]).await;
    let first = verify(&platform, &platform.base, "founder@example.com").await;
    assert_eq!(first["became_admin"], true, "{first}");
    let access = first["access_token"].as_str().expect("token");
    let founder = me(&platform, &platform.base, access).await;
    assert_eq!(
        (founder["role"].as_str(), founder["status"].as_str()),
        (Some("admin"), Some("approved"))
    );

    let second = verify(&platform, &platform.base, "visitor@example.com").await;
    assert_eq!(second["became_admin"], false, "{second}");
    let token = second["access_token"].as_str().expect("token");
    let visitor = me(&platform, &platform.base, token).await;
    assert_eq!(visitor["status"], "pending");
    // Told who can let them in.
    let waiting = platform.get("/api/v1/agents", Some(token)).await;
    assert_eq!(waiting.status, 403);
    assert_eq!(waiting.body["error"]["details"]["admins"], 1, "{waiting:?}");
    // And the first admin approves them.
    let visitor_id = visitor["id"].as_str().expect("id");
    let approved = platform
        .post(
            &format!("/api/v1/admin/users/{visitor_id}/approve"),
            Some(access),
            json!({}),
        )
        .await;
    assert_eq!(approved.status, 200, "{approved:?}");
}

#[tokio::test]
async fn a_pending_user_on_a_platform_with_no_admin_is_told_how_one_is_made() {
    // An admin address is configured, but its owner never signed in: nobody can approve yet.
    let platform = Platform::start(&[]).await;
    let early = platform.sign_in("early@example.com").await;
    let waiting = platform.get("/api/v1/agents", Some(&early.access)).await;
    assert_eq!(waiting.status, 403);
    assert_eq!(waiting.body["error"]["details"]["admins"], 0);
    let message = waiting.body["error"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.contains("no admin yet") && message.contains("WARREN_ADMIN_EMAILS"),
        "{message}"
    );
}

#[tokio::test]
async fn an_address_added_to_admin_emails_later_makes_its_user_admin_at_the_next_sign_in() {
    let platform = Platform::start(&[]).await;
    let before = platform.sign_in("late@example.com").await;
    assert_eq!(
        platform
            .get("/api/v1/users/me", Some(&before.access))
            .await
            .body["status"],
        "pending"
    );
    // The operator lists the address and restarts (here: another edge with the new setting).
    let (base, _edge) = platform
        .second_edge(&[("WARREN_ADMIN_EMAILS", "late@example.com")])
        .await;
    let again = verify(&platform, &base, "late@example.com").await;
    assert_eq!(again["became_admin"], true, "{again}");
    let after = me(
        &platform,
        &base,
        again["access_token"].as_str().expect("token"),
    )
    .await;
    assert_eq!(
        (after["role"].as_str(), after["status"].as_str()),
        (Some("admin"), Some("approved"))
    );
}

#[tokio::test]
async fn switching_approval_to_open_lets_a_pending_user_in_at_their_next_request() {
    let platform = Platform::start(&[]).await;
    let waiting = platform.sign_in("patient@example.com").await;
    assert_eq!(
        platform
            .get("/api/v1/agents", Some(&waiting.access))
            .await
            .status,
        403
    );
    let (base, _edge) = platform.second_edge(&[("WARREN_APPROVAL", "open")]).await;
    let listed = platform
        .http
        .get(format!("{base}/api/v1/agents"))
        .bearer_auth(&waiting.access)
        .send()
        .await
        .expect("agents");
    assert_eq!(listed.status().as_u16(), 200);
    assert_eq!(
        me(&platform, &base, &waiting.access).await["status"],
        "approved"
    );
}

/// The conversation of a run's stream (from its `queued` frame) and the run's terminal frame.
async fn run_to_end(chat: &Chat, message: &str) -> (String, chat_support::Frame) {
    let mut run = chat.send(message).await;
    let conversation_id = run.until("queued").await.data["conversation_id"]
        .as_str()
        .expect("conversation id")
        .to_owned();
    (conversation_id, run.finish().await)
}

#[tokio::test]
async fn a_platform_without_a_model_provider_says_so_at_start_and_in_each_run() {
    let chat = Chat::start_without_model_provider(&[]).await;
    let log = chat.platform.warren.log_text();
    assert!(
        log.contains("no model provider is configured")
            && log.contains("WARREN_DEFAULT_API_KEY")
            && log.contains("WARREN_DEFAULT_BASE_URL"),
        "no start-up warning naming the variables; log:\n{log}"
    );

    let (_, end) = run_to_end(&chat, "hello?").await;
    assert_eq!(end.kind(), "error", "{end:?}");
    assert_eq!(end.data["code"], "model_not_configured", "{end:?}");
    assert_eq!(end.data["retryable"], false, "{end:?}");
    let message = end.data["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("WARREN_DEFAULT_PROVIDER")
            && message.contains("WARREN_DEFAULT_API_KEY")
            && message.contains("/api/v1/users/me/api-keys"),
        "{message}"
    );
    assert_eq!(chat.model.request_count(), 0, "no model was called");
}

/// The conversation's history over REST once it holds `count` entries.
async fn history(chat: &Chat, conversation_id: &str, count: usize) -> Vec<Value> {
    let path = format!("/api/v1/conversations/{conversation_id}/messages");
    wait_for(Duration::from_secs(30), || async {
        let list = chat.platform.get(&path, Some(&chat.user.access)).await.body;
        let list = list.as_array()?.clone();
        (list.len() >= count).then_some(list)
    })
    .await
}

#[tokio::test]
async fn a_failed_run_shows_in_the_history_with_its_public_error_over_rest_and_the_gateway() {
    let chat = Chat::start_without_model_provider(&[]).await;
    let (conversation_id, end) = run_to_end(&chat, "anyone there?").await;
    assert_eq!(end.data["code"], "model_not_configured");

    let entries = history(&chat, &conversation_id, 2).await;
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert_eq!(entries[0]["role"], "user");
    assert_eq!(entries[0]["text"], "anyone there?");
    assert_eq!(entries[0]["status"], Value::Null);
    let failed = &entries[1];
    assert_eq!(
        (failed["role"].as_str(), failed["status"].as_str()),
        (Some("assistant"), Some("failed")),
        "{failed}"
    );
    assert_eq!(failed["run_id"], entries[0]["run_id"]);
    assert_eq!(failed["error_code"], "model_not_configured");
    assert_eq!(failed["error_message"], end.data["message"]);
    assert_eq!(failed["retryable"], false);
    assert_eq!(failed["text"], "");

    let (mut ws, _) = Ws::connect(&chat.platform.base, &chat.user.access).await;
    let answer = ws
        .call(
            "sessions.history",
            json!({"sessionId": conversation_id.as_str()}),
        )
        .await;
    assert_eq!(answer["ok"], true, "{answer}");
    let messages = answer["payload"]["messages"].as_array().expect("messages");
    assert_eq!(messages.len(), 2, "{answer}");
    assert_eq!(messages[1]["status"], "failed", "{answer}");
    assert_eq!(messages[1]["error"]["code"], "model_not_configured");
    assert_eq!(messages[1]["error"]["message"], end.data["message"]);
}

#[tokio::test]
async fn a_cancelled_run_shows_in_the_history_as_cancelled() {
    let chat = Chat::start(&[]).await;
    chat.model.push(Reply::hang());
    let mut run = chat.send("take your time").await;
    let conversation_id = run.until("queued").await.data["conversation_id"]
        .as_str()
        .expect("conversation id")
        .to_owned();
    run.until("status").await;
    let cancelled = chat
        .platform
        .post(
            &format!("/api/v1/conversations/{conversation_id}/cancel"),
            Some(&chat.user.access),
            json!({}),
        )
        .await;
    assert_eq!(cancelled.status, 202, "{cancelled:?}");
    assert_eq!(run.finish().await.data["code"], "cancelled");

    let entries = history(&chat, &conversation_id, 2).await;
    assert_eq!(entries[1]["status"], "cancelled", "{entries:?}");
    assert_eq!(entries[1]["error_code"], "cancelled");
    assert_eq!(entries[1]["error_message"], "the run was cancelled");
    let listed = chat
        .platform
        .get("/api/v1/conversations", Some(&chat.user.access))
        .await;
    assert_eq!(listed.body[0]["message_count"], 2, "{listed:?}");
}

#[tokio::test]
async fn a_model_provider_the_platform_cannot_reach_is_named_without_its_url_or_key() {
    // Nothing listens there; the URL carries a key, as some gateways' URLs do.
    let closed = common::free_port();
    let url = format!("http://127.0.0.1:{closed}/v1?key=sk-in-the-url");
    let chat = Chat::start(&[("WARREN_DEFAULT_BASE_URL", &url)]).await;

    let (_, end) = run_to_end(&chat, "hello?").await;
    assert_eq!(end.data["code"], "model_unreachable", "{end:?}");
    assert_eq!(end.data["retryable"], true, "{end:?}");
    let message = end.data["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("openai") && message.contains("WARREN_DEFAULT_BASE_URL"),
        "{message}"
    );
    for leak in [
        "sk-in-the-url",
        "sk-platform",
        "127.0.0.1",
        &closed.to_string(),
    ] {
        assert!(
            !end.data.to_string().contains(leak),
            "{leak} leaked: {end:?}"
        );
    }
    // The cause is in the runtime's log instead.
    let agent_log = chat.agent_dir().join("agent.log");
    warren_testkit::wait_until(Duration::from_secs(10), || async {
        std::fs::read_to_string(&agent_log)
            .unwrap_or_default()
            .contains("model turn failed")
    })
    .await;
}

/// Whether `pid` is a live process (a zombie waiting for its parent counts as gone).
fn running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let state = stat.rsplit_once(')')?.1.trim_start().chars().next()?;
            Some(state != 'Z' && state != 'X')
        })
        .unwrap_or(false)
}

/// Live `warren-agent` processes whose workspace is under `dir`.
fn agent_processes_under(dir: &std::path::Path) -> Vec<i32> {
    let needle = format!("WARREN_AGENT_WORKSPACE={}", dir.display());
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| running(*pid))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|environ| {
                environ
                    .split(|&b| b == 0)
                    .any(|entry| entry.starts_with(needle.as_bytes()))
            })
        })
        .collect()
}

#[tokio::test]
async fn stopping_warren_dev_stops_its_agents_and_the_next_start_runs_them_again() {
    let mut chat = Chat::start(&[]).await;
    let before = chat.agent_pid();
    assert!(running(before));
    let data_dir = chat.platform.dir.path().join("data");

    assert!(
        chat.platform.stop().await,
        "warren dev did not exit cleanly on SIGTERM; log:\n{}",
        chat.platform.warren.log_text()
    );
    assert!(!running(before), "the agent runtime outlived warren dev");
    assert_eq!(agent_processes_under(&data_dir), Vec::<i32>::new());

    chat.platform.start_again(&[]).await;
    let after = wait_for(Duration::from_secs(60), || async {
        let pid = chat.agent_pid();
        (pid != before && running(pid)).then_some(pid)
    })
    .await;
    assert_eq!(agent_processes_under(&data_dir), vec![after]);
    chat.model.push(Reply::text("Back again."));
    let mut run = chat.send("are you there?").await;
    let done = run.finish().await;
    assert_eq!(done.data["text"], "Back again.", "{done:?}");
}

#[tokio::test]
async fn a_new_provider_url_or_key_needs_no_redeploy_and_a_new_protocol_redeploys_at_the_next_start()
 {
    let mut chat = Chat::start(&[]).await;
    let before = chat.agent_pid();

    // The provider's URL and key are the model proxy's (ADR 23): a restart with others reaches
    // the agent's next run without touching its runtime.
    let other = ModelServer::start_with_key("sk-other-provider").await;
    let other_url = other.url();
    assert!(chat.platform.stop().await, "warren dev stops");
    chat.platform
        .start_again(&[
            ("WARREN_DEFAULT_BASE_URL", &other_url),
            ("WARREN_DEFAULT_API_KEY", "sk-other-provider"),
        ])
        .await;
    chat.wait_running().await;
    other.push(Reply::text("From the new provider."));
    let mut run = chat.send("who answers?").await;
    assert_eq!(run.finish().await.data["text"], "From the new provider.");
    assert_eq!(other.request_count(), 1);
    assert_eq!(
        chat.model.request_count(),
        0,
        "the old provider is not called"
    );
    assert!(
        !chat
            .agent_commits()
            .await
            .iter()
            .any(|c| c.contains("platform_config_changed")),
        "a new URL or key redeploys nothing"
    );

    // A provider speaking another protocol: the runtime must speak it, so it is redeployed.
    assert!(chat.platform.stop().await, "warren dev stops");
    chat.platform
        .start_again(&[("WARREN_DEFAULT_PROVIDER", "anthropic")])
        .await;
    wait_for(Duration::from_secs(60), || async {
        let commits = chat.agent_commits().await;
        let redeploy = commits
            .iter()
            .position(|c| c.contains("platform_config_changed"))?;
        commits[redeploy..]
            .iter()
            .any(|c| c.contains("AgentDeployed"))
            .then_some(())
    })
    .await;
    let pid = chat.agent_pid();
    assert_ne!(pid, before);
    assert_eq!(
        chat_support::runtime_env(pid, "WARREN_AGENT_PROVIDER").as_deref(),
        Some("anthropic")
    );
    chat.wait_running().await;
    other.push(Reply::text("In Anthropic's words."));
    let mut run = chat.send("and now?").await;
    assert_eq!(run.finish().await.data["text"], "In Anthropic's words.");
    let last = other.recorded().pop().expect("a request");
    assert_eq!(last.path, "/v1/messages");
    assert_eq!(last.api_key.as_deref(), Some("sk-other-provider"));
}

/// `warren <args> --help` as printed, with `env` set and no config file.
fn help(args: &[&str], env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_warren"));
    command
        .args(args)
        .arg("--help")
        .current_dir(dir.path())
        .env("WARREN_CONFIG", dir.path().join("absent.toml"));
    for (key, value) in env {
        command.env(key, value);
    }
    let out = command.output().expect("warren --help");
    assert!(out.status.success(), "{args:?} --help failed: {out:?}");
    String::from_utf8(out.stdout).expect("utf-8 help")
}

/// The line of `help` that documents `variable` (clap prints `[env: NAME=…]` after its text).
fn documented<'a>(help: &'a str, variable: &str) -> Option<&'a str> {
    let wanted = format!("[env: {variable}");
    let at = help.find(&wanted)?;
    let end = help[at..].find('\n').map_or(help.len(), |n| at + n);
    Some(&help[at..end])
}

#[test]
fn every_role_lists_the_variables_it_reads_with_their_defaults() {
    let common = [
        ("WARREN_NATS_URL", None),
        ("WARREN_DATABASE_URL", None),
        ("WARREN_HTTP_ADDR", Some("127.0.0.1:8080")),
        ("WARREN_LOG", Some("info,sqlx=warn")),
        ("WARREN_CONFIG", Some("warren.toml")),
    ];
    let model = [
        ("WARREN_DEFAULT_PROVIDER", None),
        ("WARREN_DEFAULT_BASE_URL", None),
        ("WARREN_DEFAULT_API_KEY", None),
        ("WARREN_DEFAULT_MODEL", Some("qwen3-coder-next")),
    ];
    // (subcommand, variables it lists with their defaults, variables it does not list)
    type Expected<'a> = &'a [(&'a str, Option<&'a str>)];
    let roles: [(&[&str], Expected, &[&str]); 7] = [
        (
            &["dev"],
            &[
                ("WARREN_DATA_DIR", Some(".warren")),
                ("WARREN_NATS_SYNC_INTERVAL", Some("2m")),
                ("WARREN_APPROVAL", Some("required")),
                ("WARREN_AGENT_BIN", None),
                ("WARREN_CHAT_LEASE_BEAT_SECS", Some("3")),
            ],
            &[],
        ),
        (
            &["edge"],
            &[
                ("WARREN_JWT_SECRET", None),
                ("WARREN_SMTP_URL", None),
                ("WARREN_HTTP_MAX_CONNECTIONS_PER_IP", Some("256")),
                ("WARREN_TIER_FREE_MAX_AGENTS", Some("1")),
            ],
            &[
                "WARREN_DEPLOYER_RECONCILE_SECS",
                "WARREN_CHAT_LEASE_BEAT_SECS",
            ],
        ),
        (
            &["worker", "projector"],
            &[("WARREN_DB_MAX_CONNECTIONS", Some("10"))],
            &[
                "WARREN_JWT_SECRET",
                "WARREN_DEFAULT_API_KEY",
                "WARREN_SMTP_URL",
            ],
        ),
        (
            &["worker", "notifier"],
            &[
                ("WARREN_SMTP_URL", None),
                ("WARREN_ADMIN_EMAILS", Some("\"\"")),
            ],
            &["WARREN_DEFAULT_API_KEY"],
        ),
        (
            &["worker", "deployer"],
            &[
                ("WARREN_AGENT_BIN", None),
                ("WARREN_DEPLOYER_RECONCILE_SECS", Some("30")),
                ("WARREN_ENCRYPTION_KEY", None),
            ],
            &["WARREN_CHAT_LEASE_BEAT_SECS", "WARREN_SMTP_URL"],
        ),
        (
            &["worker", "chat"],
            &[
                ("WARREN_CHAT_LEASE_STALE_SECS", Some("15")),
                ("WARREN_CHAT_LIVE_TTL_SECS", Some("86400")),
            ],
            &["WARREN_DEPLOYER_RECONCILE_SECS", "WARREN_SMTP_URL"],
        ),
        (&["migrate"], &[], &["WARREN_DEFAULT_API_KEY"]),
    ];
    for (args, expected, absent) in roles {
        let text = help(args, &[]);
        let reads_model = matches!(args, ["dev"] | ["edge"] | [_, "deployer" | "chat"]);
        let model: &[(&str, Option<&str>)] = if reads_model { &model } else { &[] };
        for (variable, default) in common.iter().chain(model).chain(expected) {
            let line = documented(&text, variable)
                .unwrap_or_else(|| panic!("`warren {args:?} --help` lacks {variable}:\n{text}"));
            if let Some(default) = default {
                assert!(
                    line.contains(&format!("[default: {default}]")),
                    "{variable} in {args:?}: {line}"
                );
            }
        }
        for variable in absent {
            assert!(
                documented(&text, variable).is_none(),
                "`warren {args:?} --help` lists {variable}, which it does not read"
            );
        }
    }
}

#[test]
fn every_variable_of_the_readme_config_table_is_in_warren_dev_help() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let table = readme
        .split("## Configuration")
        .nth(1)
        .and_then(|rest| {
            rest.split("\n\n")
                .find(|block| block.starts_with("| variable"))
        })
        .expect("the config table");
    let variables: Vec<&str> = table
        .lines()
        .filter_map(|row| row.strip_prefix("| `")?.split('`').next())
        .collect();
    assert!(variables.len() > 50, "{variables:?}");
    let text = help(&["dev"], &[]);
    let missing: Vec<&&str> = variables
        .iter()
        .filter(|variable| documented(&text, variable).is_none())
        .collect();
    assert!(
        missing.is_empty(),
        "not in `warren dev --help`: {missing:?}"
    );
}

#[test]
fn help_never_prints_a_secret_from_the_environment() {
    let text = help(
        &["dev"],
        &[
            ("WARREN_DEFAULT_API_KEY", "sk-do-not-print"),
            ("WARREN_DATABASE_URL", "postgres://u:pw-do-not-print@h/db"),
        ],
    );
    assert!(!text.contains("do-not-print"), "{text}");
}

#[test]
fn a_config_file_value_is_the_default_and_the_environment_still_wins() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("warren.toml");
    std::fs::write(
        &file,
        "http_addr = \"127.0.0.1:9999\"\nchat_sweep_secs = 7\n",
    )
    .expect("config file");
    let file = file.display().to_string();
    let text = help(&["dev"], &[("WARREN_CONFIG", &file)]);
    assert!(
        documented(&text, "WARREN_HTTP_ADDR")
            .is_some_and(|l| l.contains("[default: 127.0.0.1:9999]")),
        "{text}"
    );
    let text = help(
        &["worker", "chat", "--config", &file],
        &[("WARREN_CHAT_SWEEP_SECS", "9")],
    );
    let line = documented(&text, "WARREN_CHAT_SWEEP_SECS").expect("listed");
    assert!(
        line.contains("[default: 7]") && line.contains("=9]"),
        "{line}"
    );
}

#[tokio::test]
async fn a_configured_provider_wins_over_the_local_model() {
    // The local model is on (as `warren dev` has it by default) and a platform provider is
    // configured: the provider answers, and the local model is not started.
    let chat = Chat::start(&[("WARREN_LOCAL_MODEL", "auto")]).await;
    chat.model.push(Reply::text("From the provider."));
    let (_, end) = run_to_end(&chat, "who answers?").await;
    assert_eq!(end.kind(), "done", "{end:?}");
    assert_eq!(end.data["text"], "From the provider.");
    assert_eq!(chat.model.request_count(), 1);
    assert!(
        !chat
            .platform
            .warren
            .log_text()
            .contains("local model serving"),
        "the local model was not started"
    );
}
