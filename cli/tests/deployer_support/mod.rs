//! A deployer under test: a real NATS and PostgreSQL, `warren worker deployer` processes, and
//! the agent commands an owner would send, read back from the log.

#![allow(dead_code)]

use crate::common::Warren;
use std::path::PathBuf;
use std::time::Duration;
use warren_commands::codec;
use warren_commands::topology::{AGENTS, LogSettings};
use warren_commands::{CommandMeta, CommandService};
use warren_domain::Actor;
use warren_domain::agent::{Agent, AgentCommand, AgentEvent, Backend, DeploymentStep, RuntimeKind};
use warren_domain::ids::{AgentId, UserId};
use warren_testkit::{TestDb, TestNats};

pub const TIMEOUT: Duration = Duration::from_secs(60);

pub use crate::common::agent_bin;

pub async fn healthy(endpoint: &str) -> bool {
    reqwest::get(format!("{endpoint}/health"))
        .await
        .is_ok_and(|response| response.status().is_success())
}

/// Polls `check` until it yields a value or [`TIMEOUT`] passes.
pub async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub struct Platform {
    pub nats: TestNats,
    pub db: TestDb,
    pub dir: tempfile::TempDir,
    pub env: Vec<(&'static str, String)>,
    pub js: async_nats::jetstream::Context,
    pub commands: CommandService,
}

impl Platform {
    pub async fn start() -> Self {
        let nats = TestNats::start().await;
        let db = TestDb::create().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let mut env = [nats.warren_env(), db.warren_env()].concat();
        env.extend([
            (
                "WARREN_DATA_DIR",
                dir.path().join("data").display().to_string(),
            ),
            ("WARREN_ENCRYPTION_KEY", "ab".repeat(32)),
            ("WARREN_AGENT_BIN", agent_bin().display().to_string()),
            ("WARREN_DEPLOYER_RECONCILE_SECS", "1".to_owned()),
        ]);
        let js = nats.jetstream().await;
        let commands = CommandService::start(js.clone(), &LogSettings::default())
            .await
            .expect("commands");
        Self {
            nats,
            db,
            dir,
            env,
            js,
            commands,
        }
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn deployer(&self, name: &str) -> Warren {
        Warren::spawn(&["worker", "deployer"], &self.env, self.dir.path(), name)
    }

    pub async fn create_agent(&self) -> (AgentId, UserId) {
        let owner = UserId::new();
        (self.create_agent_for(owner, Backend::Process).await, owner)
    }

    /// An agent of `owner` on `backend` (its first deployment requested).
    pub async fn create_agent_for(&self, owner: UserId, backend: Backend) -> AgentId {
        let agent = AgentId::new();
        self.commands
            .agents
            .execute(
                &agent.to_string(),
                AgentCommand::CreateAgent {
                    agent_id: agent,
                    owner_id: owner,
                    name: "deployed".into(),
                    system_prompt: "You are helpful.".into(),
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

    pub async fn command(&self, agent: AgentId, owner: UserId, command: AgentCommand) {
        self.commands
            .agents
            .execute(
                &agent.to_string(),
                command,
                &CommandMeta::new(Actor::User(owner)),
            )
            .await
            .expect("agent command");
    }

    pub async fn agent(&self, agent: AgentId) -> Agent {
        self.commands
            .agents
            .load(&agent.to_string())
            .await
            .expect("load agent")
            .0
    }

    /// The agent's events, in log order.
    pub async fn events(&self, agent: AgentId) -> Vec<AgentEvent> {
        let mut stream = self.js.get_stream(AGENTS).await.expect("stream");
        let last = stream.info().await.expect("info").state.last_sequence;
        let subject = format!("agent.{agent}");
        let mut events = Vec::new();
        for seq in 1..=last {
            let Ok(message) = stream.get_raw_message(seq).await else {
                continue;
            };
            if message.subject.as_str() == subject {
                events.extend(
                    codec::decode::<AgentEvent>(&message.payload)
                        .expect("decode")
                        .into_iter()
                        .map(|envelope| envelope.event),
                );
            }
        }
        events
    }

    /// The deployment steps recorded for the agent, in log order.
    pub async fn steps(&self, agent: AgentId) -> Vec<DeploymentStep> {
        self.events(agent)
            .await
            .iter()
            .filter_map(|event| match event {
                AgentEvent::DeploymentStepCompleted { step, .. } => Some(*step),
                _ => None,
            })
            .collect()
    }

    /// Waits until the agent is deployed; its endpoint.
    pub async fn endpoint(&self, agent: AgentId, deployer: &Warren) -> String {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            if let Some(endpoint) = self.agent(agent).await.endpoint_url {
                return endpoint;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the agent was not deployed: {:?}\n{}",
                self.agent(agent).await,
                deployer.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
