//! What the cli benches seed the log with: a signed-up user, their agent, and conversations,
//! each by a command as a client would cause it.

use uuid::Uuid;
use warren_commands::{CommandMeta, CommandService};
use warren_domain::Actor;
use warren_domain::agent::{AgentCommand, Backend, RuntimeKind};
use warren_domain::conversation::ConversationCommand;
use warren_domain::ids::{AgentId, ConnectionId, ConversationId, UserId};
use warren_domain::user::{ApprovalMode, AuthKind, AuthMethod, UserCommand};

fn meta() -> CommandMeta {
    CommandMeta::new(Actor::System("bench".into()))
}

/// A new user, approved (open sign-up).
pub async fn user(commands: &CommandService) -> UserId {
    let user = UserId::new();
    let register = UserCommand::RegisterUser {
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
    };
    commands
        .users
        .execute(&user.to_string(), register, &meta())
        .await
        .expect("register");
    user
}

/// A new agent of `owner`, its deployment `deployment_id` started, then `more` commands on it.
pub async fn agent(
    commands: &CommandService,
    owner: UserId,
    deployment_id: Uuid,
    more: impl IntoIterator<Item = AgentCommand>,
) -> AgentId {
    let agent = AgentId::new();
    let create = AgentCommand::CreateAgent {
        agent_id: agent,
        owner_id: owner,
        name: "bench".into(),
        system_prompt: String::new(),
        model: "bench".into(),
        runtime: RuntimeKind::default(),
        backend: Backend::default(),
        host: None,
        deployment_id,
    };
    for command in std::iter::once(create).chain(more) {
        commands
            .agents
            .execute(&agent.to_string(), command, &meta())
            .await
            .expect("agent command");
    }
    agent
}

/// `n` new conversations of `user` with `agent`, with the stream sequence of each start.
pub async fn conversations(
    commands: &CommandService,
    user: UserId,
    agent: AgentId,
    n: usize,
) -> Vec<(ConversationId, u64)> {
    let mut started = Vec::with_capacity(n);
    for _ in 0..n {
        let id = ConversationId::new();
        let start = ConversationCommand::StartConversation {
            conversation_id: id,
            user_id: user,
            agent_id: agent,
            title: None,
        };
        let committed = commands
            .conversations
            .execute(&id.to_string(), start, &meta())
            .await
            .expect("start conversation");
        started.push((id, committed.sequence));
    }
    started
}
