//! `warren agents list|create [--wait]|delete|logs`. `create --wait` follows the user-wide feed
//! on the gateway (subscribed before the agent is created, so no step is missed) and draws the
//! six deployment steps as a progress bar until the agent runs or its deployment fails.

use super::api::Api;
use super::events::Kind;
use super::gateway::Gateway;
use super::render::Printer;
use super::store::Store;
use crate::config::ClientConfig;
use anyhow::bail;
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::io::Write;
use std::process::ExitCode;
use warren_domain::agent::DeploymentStep;

/// `warren agents`.
#[derive(Debug, clap::Args)]
pub struct AgentsArgs {
    #[command(flatten)]
    client: ClientConfig,
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Your agents and their status.
    List,
    /// Create an agent (it deploys at once).
    Create {
        /// Its name.
        name: String,
        /// Its system prompt.
        #[arg(long)]
        system_prompt: Option<String>,
        /// Its model (default: the platform's).
        #[arg(long)]
        model: Option<String>,
        /// Wait until it runs, showing the six deployment steps.
        #[arg(long)]
        wait: bool,
    },
    /// Delete an agent and its sandbox.
    Delete {
        /// Name or id.
        agent: String,
    },
    /// An agent's deployment history: each step, deployment and failure, oldest first.
    Logs {
        /// Name or id.
        agent: String,
    },
}

/// An agent as the REST API shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Agent {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// `deploying`, `running`, `failed`, `stopped`, `paused`.
    pub status: String,
    /// Its model.
    #[serde(default)]
    pub model: String,
    /// The last deployment or health error.
    #[serde(default)]
    pub last_error: Option<String>,
}

/// The user's agents, oldest first.
pub async fn list(api: &mut Api) -> anyhow::Result<Vec<Agent>> {
    api.get("/agents").await
}

/// The agent with this id, else this name (ignoring case).
pub fn find<'a>(agents: &'a [Agent], name_or_id: &str) -> Option<&'a Agent> {
    agents.iter().find(|a| a.id == name_or_id).or_else(|| {
        agents
            .iter()
            .find(|a| a.name.eq_ignore_ascii_case(name_or_id))
    })
}

async fn resolve(api: &mut Api, name_or_id: &str) -> anyhow::Result<Agent> {
    let all = list(api).await?;
    match find(&all, name_or_id) {
        Some(agent) => Ok(agent.clone()),
        None => bail!("no agent named {name_or_id}: `warren agents list` shows yours"),
    }
}

/// Runs `warren agents …`.
pub async fn run(args: AgentsArgs) -> anyhow::Result<ExitCode> {
    let printer = Printer::new(args.client.json);
    let mut api = Api::signed_in(&args.client.url, Store::new(args.client.dir()?))?;
    match args.action {
        Action::List => {
            let agents = list(&mut api).await?;
            printer.answer(&agents, || {
                if agents.is_empty() {
                    return "no agents yet: `warren agents create NAME --wait`".into();
                }
                agents
                    .iter()
                    .map(|a| format!("{}  {:<10} {}  ({})", a.id, a.status, a.name, a.model))
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        Action::Create {
            name,
            system_prompt,
            model,
            wait,
        } => {
            let body = json!({"name": name, "system_prompt": system_prompt, "model": model});
            return create(&mut api, printer, body, wait).await;
        }
        Action::Delete { agent } => {
            let agent = resolve(&mut api, &agent).await?;
            let _: Value = api
                .call(Method::DELETE, &format!("/agents/{}", agent.id), None)
                .await?;
            printer.answer(&json!({"id": agent.id, "deleted": true}), || {
                format!("deleted {} ({})", agent.name, agent.id)
            });
        }
        Action::Logs { agent } => {
            let agent = resolve(&mut api, &agent).await?;
            let status: Value = api.get(&format!("/agents/{}/status", agent.id)).await?;
            let history: Vec<HistoryEntry> =
                serde_json::from_value(status["history"].clone()).unwrap_or_default();
            printer.answer(&history, || {
                history
                    .iter()
                    .map(HistoryEntry::line)
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One deployment fact.
#[derive(Debug, Serialize, Deserialize)]
struct HistoryEntry {
    created_at: String,
    status: String,
    #[serde(default)]
    step: Option<String>,
    #[serde(default)]
    error_message: Option<String>,
}

impl HistoryEntry {
    fn line(&self) -> String {
        let mut line = format!("{}  {}", self.created_at, self.status);
        if let Some(step) = &self.step {
            line.push_str(&format!(" {step}"));
        }
        if let Some(error) = &self.error_message {
            line.push_str(&format!(": {error}"));
        }
        line
    }
}

async fn create(
    api: &mut Api,
    printer: Printer,
    body: Value,
    wait: bool,
) -> anyhow::Result<ExitCode> {
    // Subscribed before the create, so the first step cannot pass unseen.
    let mut feed = match wait {
        true => {
            let token = api.access_token().await?;
            let mut gateway = Gateway::connect(api.base(), &token).await?;
            gateway.call("feed.subscribe", json!({})).await?;
            Some(gateway)
        }
        false => None,
    };
    let agent: Agent = api.call(Method::POST, "/agents", Some(&body)).await?;
    let Some(feed) = feed.as_mut() else {
        printer.answer(&agent, || {
            format!("created {} ({}): deploying", agent.name, agent.id)
        });
        return Ok(ExitCode::SUCCESS);
    };
    printer.note(&format!(
        "created {} ({}), deploying:",
        agent.name, agent.id
    ));
    let total = DeploymentStep::ALL.len();
    loop {
        let Some(event) = feed.next_event().await? else {
            bail!(
                "the gateway closed the connection while {} deployed",
                agent.name
            );
        };
        let Kind::Feed(frame) = &event.kind else {
            continue;
        };
        if frame.kind != "agent" || frame.id != agent.id {
            continue;
        }
        if printer.json() {
            println!("{}", event.raw);
        }
        match frame.change.kind.as_str() {
            "deployment_step" => {
                if let Some(step) = frame.change.step {
                    progress(printer, step, total);
                }
            }
            "deployed" => {
                let agent: Agent = api.get(&format!("/agents/{}", agent.id)).await?;
                printer.note("");
                printer.answer(&agent, || {
                    format!("{} is running ({})", agent.name, agent.id)
                });
                return Ok(ExitCode::SUCCESS);
            }
            "deployment_failed" => {
                printer.note("");
                let step = frame.change.step.map_or("?".into(), |s| s.to_string());
                let message = frame.change.message.clone().unwrap_or_default();
                eprintln!("deployment failed at {step}: {message}");
                return Ok(ExitCode::FAILURE);
            }
            _ => {}
        }
    }
}

/// Redraws the progress bar at `step` (done) of `total`.
fn progress(printer: Printer, step: DeploymentStep, total: usize) {
    if printer.json() {
        return;
    }
    let done = usize::from(step.number());
    let bar: String = (0..total)
        .map(|n| if n < done { '█' } else { '░' })
        .collect();
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "\r[{bar}] {done}/{total} {step:<14}");
    let _ = err.flush();
}
