//! What the chat worker's tests share: a local runtime on a free port, and an agent the log
//! says is running there.

#![allow(dead_code)]

use uuid::Uuid;
use warren_commands::{CommandMeta, CommandService};
use warren_domain::Actor;
use warren_domain::agent::{AgentCommand, Backend, DeploymentStep, RuntimeKind};
use warren_domain::ids::{AgentId, UserId};

/// Serves `app` on 127.0.0.1:<free port>; its base URL.
pub async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    endpoint
}

/// Creates `owner`'s agent running `runtime` and deploys it at `endpoint`, all six steps.
pub async fn deployed_agent(
    commands: &CommandService,
    agent: AgentId,
    owner: UserId,
    runtime: RuntimeKind,
    endpoint: String,
) {
    let deployment_id = Uuid::now_v7();
    let mut setup = vec![AgentCommand::CreateAgent {
        agent_id: agent,
        owner_id: owner,
        name: "helper".into(),
        system_prompt: String::new(),
        model: "m".into(),
        runtime,
        backend: Backend::default(),
        host: None,
        deployment_id,
    }];
    setup.extend(
        DeploymentStep::ALL
            .iter()
            .map(|&step| AgentCommand::CompleteDeploymentStep {
                deployment_id,
                step,
            }),
    );
    setup.push(AgentCommand::CompleteDeployment {
        deployment_id,
        endpoint_url: endpoint,
        workspace: None,
    });
    for command in setup {
        commands
            .agents
            .execute(
                &agent.to_string(),
                command,
                &CommandMeta::new(Actor::System("test".into())),
            )
            .await
            .expect("agent");
    }
}
