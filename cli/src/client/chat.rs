//! `warren chat`: picks a session (the one named, a new one, or the last one), shows its
//! history, sends a message and streams the run, or chats line by line (`--interactive`) with
//! the gateway's slash commands. Ctrl-C cancels the running run; a second Ctrl-C exits.

use super::agents::{self, Agent};
use super::api::Api;
use super::events::{HistoryMessage, Kind};
use super::gateway::GatewayRefused;
use super::link::{Following, Link};
use super::render::Printer;
use super::store::{LastSession, Store};
use crate::config::ClientConfig;
use anyhow::{Context, bail};
use serde::Deserialize;
use serde_json::{Value, json};
use std::io::Write;
use std::process::ExitCode;
use tokio::signal::unix::{Signal, SignalKind, signal};

/// `warren chat`.
#[derive(Debug, clap::Args)]
pub struct ChatArgs {
    #[command(flatten)]
    client: ClientConfig,
    /// The agent, by name or id (default: the last session's, or your only agent). A lone
    /// argument that names no agent is taken as the message.
    agent: Option<String>,
    /// The message to send; without one, chat line by line.
    message: Option<String>,
    /// Continue this session (by id).
    #[arg(long, conflicts_with_all = ["new", "fork"])]
    session: Option<String>,
    /// Continue a copy of a session from one of its messages: `SESSION@SEQ` starts a new
    /// session whose history is SESSION's up to its event SEQ (the original is untouched).
    #[arg(long, value_name = "SESSION@SEQ", value_parser = parse_fork, conflicts_with = "new")]
    fork: Option<(String, u64)>,
    /// Start a new session.
    #[arg(long)]
    new: bool,
    /// List your recent sessions, then exit.
    #[arg(long)]
    sessions: bool,
    /// Show the session's last N messages first.
    #[arg(long, value_name = "N")]
    history: Option<u32>,
    /// Chat line by line (the default without a message); `/help` lists the commands.
    #[arg(long, short)]
    interactive: bool,
}

/// Which session to talk in.
enum SessionChoice {
    /// The one with this id.
    Named(String),
    /// A fork of this session after this `seq`.
    Fork(String, u64),
    /// A new one with the agent.
    New,
    /// The last one used with the agent, else a new one.
    Last,
}

/// The `agent` method's answer.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Posted {
    run_id: String,
}

/// A session as `sessions.new` and `sessions.switch` answer.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SessionAnswer {
    session_id: String,
    agent_id: Option<String>,
}

/// How a run ended.
#[derive(Debug, PartialEq, Eq)]
enum RunEnd {
    Completed,
    Failed,
    Cancelled,
}

/// Runs `warren chat`.
pub async fn run(args: ChatArgs) -> anyhow::Result<ExitCode> {
    let printer = Printer::new(args.client.json);
    let store = Store::new(args.client.dir()?);
    let mut api = Api::signed_in(&args.client.url, store.clone())?;
    // Registered before anything else, so a Ctrl-C never kills the client mid-run.
    let mut interrupts = signal(SignalKind::interrupt()).context("catching Ctrl-C")?;

    let (agent, message) = pick_agent(&mut api, args.agent, args.message).await?;
    let mut link = Link::open(api).await?;
    if args.sessions {
        list_sessions(&mut link, printer).await?;
        return Ok(ExitCode::SUCCESS);
    }
    let choice = match (args.session, args.fork, args.new) {
        (Some(id), _, _) => SessionChoice::Named(id),
        (None, Some((id, after)), _) => SessionChoice::Fork(id, after),
        (None, None, true) => SessionChoice::New,
        (None, None, false) => SessionChoice::Last,
    };
    let following = choose_session(&mut link, &store, agent, choice).await?;
    printer.note(&format!("session {}", following.session_id));
    if let Some(count) = args.history {
        show_history(&mut link, printer, &following.session_id, count).await?;
    }
    let mut code = ExitCode::SUCCESS;
    if let Some(message) = &message {
        let end = send(&mut link, printer, &mut interrupts, message).await?;
        if end != RunEnd::Completed {
            code = ExitCode::FAILURE;
        }
    }
    let interactive = args.interactive || (message.is_none() && args.history.is_none());
    if interactive {
        chat_lines(&mut link, printer, &store, &mut interrupts).await?;
    }
    Ok(code)
}

/// The agent named (or the only one), and the message: a lone word that names no agent is the
/// message.
async fn pick_agent(
    api: &mut Api,
    agent: Option<String>,
    message: Option<String>,
) -> anyhow::Result<(Option<Agent>, Option<String>)> {
    let Some(name) = agent else {
        return Ok((None, message));
    };
    let all = agents::list(api).await?;
    match (agents::find(&all, &name), message) {
        (Some(agent), message) => Ok((Some(agent.clone()), message)),
        (None, None) => Ok((None, Some(name))),
        (None, Some(_)) => bail!("no agent named {name}: `warren agents list` shows yours"),
    }
}

async fn choose_session(
    link: &mut Link,
    store: &Store,
    agent: Option<Agent>,
    choice: SessionChoice,
) -> anyhow::Result<Following> {
    let base = link.api().base().to_owned();
    let last = store
        .last_session()?
        .filter(|last| last.url.trim_end_matches('/') == base)
        .filter(|last| agent.as_ref().is_none_or(|a| a.id == last.agent_id));
    let answer = match choice {
        SessionChoice::Named(id) => switch(link, &id).await?,
        SessionChoice::Fork(id, after) => fork(link, &id, after).await?,
        SessionChoice::Last if last.is_some() => {
            let last = last
                .as_ref()
                .map(|l| l.session_id.clone())
                .unwrap_or_default();
            match switch(link, &last).await {
                Err(err) if is_code(&err, "not_found") => new_session(link, agent, None).await?,
                other => other?,
            }
        }
        SessionChoice::Last | SessionChoice::New => {
            new_session(link, agent, last.map(|l| l.agent_id)).await?
        }
    };
    let following = Following {
        session_id: answer.session_id,
        agent_id: answer.agent_id.unwrap_or_default(),
    };
    remember(link, store, following.clone())?;
    Ok(following)
}

fn is_code(err: &anyhow::Error, code: &str) -> bool {
    err.downcast_ref::<GatewayRefused>()
        .is_some_and(|r| r.code == code)
}

/// `SESSION@SEQ`, as `--fork` takes it.
fn parse_fork(value: &str) -> Result<(String, u64), String> {
    let (session, seq) = value
        .rsplit_once('@')
        .ok_or_else(|| format!("`{value}` is not SESSION@SEQ"))?;
    let seq = seq
        .parse()
        .map_err(|_| format!("`{seq}` is not a seq (a whole number)"))?;
    if session.is_empty() {
        return Err(format!("`{value}` names no session"));
    }
    Ok((session.to_owned(), seq))
}

/// Forks session `id` after `after` (the gateway makes the fork the current session).
async fn fork(link: &mut Link, id: &str, after: u64) -> anyhow::Result<SessionAnswer> {
    let answer = link
        .call("sessions.fork", json!({"sessionId": id, "after": after}))
        .await?;
    Ok(serde_json::from_value(answer)?)
}

async fn switch(link: &mut Link, id: &str) -> anyhow::Result<SessionAnswer> {
    let answer = link
        .call("sessions.switch", json!({"sessionId": id}))
        .await?;
    Ok(serde_json::from_value(answer)?)
}

/// A new session with `agent`, else with the last session's agent, else with the user's only
/// agent.
async fn new_session(
    link: &mut Link,
    agent: Option<Agent>,
    last_agent: Option<String>,
) -> anyhow::Result<SessionAnswer> {
    let agent_id = match (agent, last_agent) {
        (Some(agent), _) => agent.id,
        (None, Some(id)) => id,
        (None, None) => {
            let all = agents::list(link.api()).await?;
            match all.as_slice() {
                [only] => only.id.clone(),
                [] => bail!("you have no agent yet: `warren agents create NAME --wait`"),
                _ => bail!("you have several agents: name one (`warren chat AGENT …`)"),
            }
        }
    };
    let answer = link
        .call("sessions.new", json!({"agentId": agent_id}))
        .await?;
    Ok(serde_json::from_value(answer)?)
}

/// Follows `following` from now on and keeps it for the next `warren chat`.
fn remember(link: &mut Link, store: &Store, following: Following) -> anyhow::Result<()> {
    store.save_last_session(&LastSession {
        url: link.api().base().to_owned(),
        session_id: following.session_id.clone(),
        agent_id: following.agent_id.clone(),
    })?;
    link.follow(following, None);
    Ok(())
}

async fn list_sessions(link: &mut Link, printer: Printer) -> anyhow::Result<()> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Listed {
        id: String,
        #[serde(default)]
        title: Option<String>,
        #[serde(default)]
        last_activity: Option<String>,
        #[serde(default)]
        message_count: Option<u64>,
    }
    let answer = link.call("sessions.list", json!({"limit": 20})).await?;
    let sessions: Vec<Listed> = serde_json::from_value(answer["sessions"].clone())?;
    printer.answer(&answer, || {
        sessions
            .iter()
            .map(|s| {
                format!(
                    "{}  {}  {} messages  {}",
                    s.id,
                    s.last_activity.as_deref().unwrap_or("-"),
                    s.message_count.unwrap_or(0),
                    s.title
                        .as_deref()
                        .filter(|t| !t.is_empty())
                        .unwrap_or("(untitled)")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    });
    Ok(())
}

async fn show_history(
    link: &mut Link,
    printer: Printer,
    session_id: &str,
    count: u32,
) -> anyhow::Result<()> {
    let answer = link
        .call(
            "sessions.history",
            json!({"sessionId": session_id, "limit": count.clamp(1, 200)}),
        )
        .await?;
    if printer.json() {
        printer.answer(&answer, String::new);
    } else {
        let messages: Vec<HistoryMessage> = serde_json::from_value(answer["messages"].clone())?;
        printer.history(&messages);
    }
    Ok(())
}

/// Sends `message` to the current session and streams its run to its end.
async fn send(
    link: &mut Link,
    printer: Printer,
    interrupts: &mut Signal,
    message: &str,
) -> anyhow::Result<RunEnd> {
    let answer = link.call("agent", json!({"message": message})).await?;
    let posted: Posted = serde_json::from_value(answer)?;
    follow_run(link, printer, interrupts, &posted.run_id).await
}

/// Prints the session's events until `run_id` ends. The first Ctrl-C asks the gateway to
/// cancel the run (which stops its tool); a second one exits at once.
async fn follow_run(
    link: &mut Link,
    printer: Printer,
    interrupts: &mut Signal,
    run_id: &str,
) -> anyhow::Result<RunEnd> {
    let mut cancelling = false;
    let mut streamed = false;
    loop {
        tokio::select! {
            event = link.next_event() => {
                let event = event?;
                match &event.kind {
                    Kind::Token(t) if t.run_id == run_id => streamed = true,
                    // A runtime that does not stream: its reply comes whole.
                    Kind::Final(f) if f.run_id == run_id && !streamed && !printer.json() => {
                        print!("{}", f.content);
                    }
                    _ => {}
                }
                printer.event(&event);
                if event.ends_run() == Some(run_id) {
                    return Ok(match event.kind {
                        Kind::Final(_) => RunEnd::Completed,
                        Kind::Cancelled(_) => RunEnd::Cancelled,
                        _ => RunEnd::Failed,
                    });
                }
            }
            _ = interrupts.recv() => {
                if cancelling {
                    printer.note("\nexiting");
                    std::process::exit(130);
                }
                cancelling = true;
                printer.note("\ncancelling the run (Ctrl-C again to exit)…");
                if let Err(err) = link.call("agent.cancel", json!({"runId": run_id})).await {
                    printer.note(&format!("could not cancel: {err:#}"));
                }
            }
        }
    }
}

/// The interactive mode: one message per line, slash commands answered by the gateway, other
/// clients' messages shown as they come. Ends at end of input, `/quit`, or Ctrl-C at the prompt.
async fn chat_lines(
    link: &mut Link,
    printer: Printer,
    store: &Store,
    interrupts: &mut Signal,
) -> anyhow::Result<()> {
    let mut lines = stdin_lines();
    printer.note("Type a message; /help lists the commands, /quit leaves.");
    loop {
        if !printer.json() {
            eprint!("> ");
            let _ = std::io::stderr().flush();
        }
        let line = loop {
            tokio::select! {
                line = lines.recv() => break line.transpose()?,
                event = link.next_event() => printer.event(&event?),
                _ = interrupts.recv() => return Ok(()),
            }
        };
        let Some(line) = line else { return Ok(()) };
        let line = line.trim();
        match line {
            "" => {}
            "/quit" | "/exit" => return Ok(()),
            command if command.starts_with('/') => {
                slash(link, printer, store, command).await?;
            }
            message => {
                send(link, printer, interrupts, message).await?;
            }
        }
    }
}

/// The terminal's lines, read on a thread of their own: tokio's stdin reads on a blocking-pool
/// thread that the runtime waits for at exit, so a Ctrl-C at the prompt would hang there.
fn stdin_lines() -> tokio::sync::mpsc::Receiver<std::io::Result<String>> {
    let (lines, receiver) = tokio::sync::mpsc::channel(16);
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            if lines.blocking_send(line).is_err() {
                break;
            }
        }
    });
    receiver
}

/// A slash command, answered by the gateway on the current session.
async fn slash(
    link: &mut Link,
    printer: Printer,
    store: &Store,
    command: &str,
) -> anyhow::Result<()> {
    #[derive(Deserialize)]
    struct Answer {
        #[serde(default)]
        text: String,
        #[serde(default)]
        result: Value,
    }
    let answer = match link.call("agent", json!({"message": command})).await {
        Ok(answer) => answer,
        Err(err) if err.downcast_ref::<GatewayRefused>().is_some() => {
            eprintln!("{err}");
            return Ok(());
        }
        Err(err) => return Err(err),
    };
    let parsed: Answer = serde_json::from_value(answer.clone())?;
    // `/new` and `/session` move the gateway to another session: follow it here too.
    let moves = command == "/new" || command.starts_with("/session ");
    if let Some(session) = moves
        .then(|| serde_json::from_value::<SessionAnswer>(parsed.result.clone()).ok())
        .flatten()
    {
        let agent_id = session
            .agent_id
            .or_else(|| link.following().map(|f| f.agent_id.clone()))
            .unwrap_or_default();
        remember(
            link,
            store,
            Following {
                session_id: session.session_id,
                agent_id,
            },
        )?;
    }
    printer.answer(&answer, || {
        if command == "/help" {
            format!("{} · /quit", parsed.text)
        } else {
            parsed.text.trim_end().to_owned()
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_fork;

    #[test]
    fn a_fork_is_a_session_and_a_seq() {
        assert_eq!(parse_fork("abc@12"), Ok(("abc".to_owned(), 12)));
        assert!(parse_fork("abc").is_err(), "no seq");
        assert!(parse_fork("abc@x").is_err(), "not a number");
        assert!(parse_fork("@3").is_err(), "no session");
    }
}
