//! The chat worker (DESIGN §4): runs each conversation's queued runs against its agent's runtime,
//! one at a time per conversation, as any number of replicas sharing the work.
//!
//! - **Taking runs.** The durable consumer `chat` reads every conversation commit
//!   (`conv.*.ev`). After a commit that may have freed or filled the head of a queue, the worker
//!   loads the conversation and, if a run is next up, takes its lease (`lease`: an atomic KV
//!   create, so exactly one replica wins), subscribes to the conversation's commits (to see
//!   cancels), then records `StartRun` and runs it in its own task (`run`). The commit is acked
//!   once that is decided; the run's outcome is its own command.
//! - **Cancels.** A run watches its conversation's commits: `CancelRequested` asks the runtime
//!   to cancel (which kills the tool's process group) and the run is confirmed with `CancelRun`;
//!   `RunCancelled` (interrupt) stops it without recording anything more.
//! - **Dead workers.** Every replica sweeps the leases: one not rewritten for `lease_stale`
//!   belonged to a worker that died. Its run, if still running, is closed with `FailRun`
//!   (`worker_lost`, retryable); if it never started, the lease is dropped and the run taken.
//! - **Paused agents.** A run whose agent was paused while idle waits, still queued, while the
//!   worker resumes the agent (when the platform has room for it) and its runtime wakes
//!   (`wake`); clients are told with `status` deltas (`resuming`, `at_capacity`).
//! - **History cleared.** `HistoryCleared` clears the chat in the runtime too.
//! - **Forks.** A forked conversation's runs hand the runtime the fork's history (read from the
//!   log, `warren_commands::history`) until one completes: the runtime has never seen it
//!   (docs/adr/0027-fork.md).
//! - **Models.** The worker reads no provider key: a runtime calls its model through the edge's
//!   model proxy with its own token, and the proxy picks the key (ADR 23). A run only tells the
//!   runtime which protocol its owner's key speaks (`provider` in `POST /chat`).
//! - **Proactive messages.** After each run, and every `pending_every` for agents run here in
//!   the last day, the runtime's `/pending` is taken and delivered into the agent's own
//!   conversations (`AgentMessagePosted`), for every client to see.
//!
//! Layout: `runtime` (the agent runtime's HTTP client), `lease` (run leases), `run` (one run),
//! `wake` (waking a paused agent before its run), `pending` (proactive messages).

pub mod failure;
pub mod lease;
pub mod pending;
pub mod run;
pub mod runtime;
pub mod wake;

use crate::consume::{ConsumeError, Durable, Handled, consume};
use crate::supervise::supervise;
use async_nats::jetstream;
use lease::{LeaseError, Leases};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use warren_commands::history::{self, Until};
use warren_commands::secrets::{AgentTokens, TokenError};
use warren_commands::{CommandError, CommandMeta, CommandService, codec, topology, trace};
use warren_domain::Actor;
use warren_domain::agent::AgentStatus;
use warren_domain::conversation::{ConversationCommand, ConversationEvent};
use warren_domain::ids::ConversationId;
use warren_projections::capacity::Capacity;

/// The durable consumer's name.
pub const CONSUMER: &str = "chat";

/// The chat worker's configuration.
#[derive(Clone, Debug)]
pub struct ChatSettings {
    /// How often a running run rewrites its lease.
    pub lease_beat: Duration,
    /// A lease older than this belongs to a dead worker.
    pub lease_stale: Duration,
    /// How often leases are swept.
    pub sweep_every: Duration,
    /// How long live deltas stay in the log (`Nats-TTL` header form, e.g. `24h`).
    pub live_ttl_header: String,
    /// How often recently run agents' runtimes are asked for proactive messages.
    pub pending_every: Duration,
    /// The platform's default model provider (`WARREN_DEFAULT_PROVIDER`), named in the message
    /// of a run that could not reach it.
    pub platform_provider: Option<warren_domain::user::Provider>,
}

impl Default for ChatSettings {
    /// Detects a dead worker within 20 s (stale age + one sweep).
    fn default() -> Self {
        Self {
            lease_beat: Duration::from_secs(3),
            lease_stale: Duration::from_secs(15),
            sweep_every: Duration::from_secs(5),
            live_ttl_header: "24h".to_owned(),
            pending_every: Duration::from_secs(5),
            platform_provider: None,
        }
    }
}

/// Why the chat worker could not start or its consumer stopped.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// The token store could not be opened.
    #[error("opening the secrets bucket failed")]
    Tokens(#[from] TokenError),
    /// The lease bucket failed.
    #[error(transparent)]
    Leases(#[from] LeaseError),
    /// The consumer could not be set up or read.
    #[error(transparent)]
    Consumer(#[from] ConsumeError),
}

/// What runs share.
pub struct Shared {
    js: jetstream::Context,
    nats: async_nats::Client,
    commands: CommandService,
    tokens: AgentTokens,
    leases: Leases,
    http: reqwest::Client,
    settings: ChatSettings,
    worker_id: String,
    watched: pending::Watched,
    /// The cap on awake sandboxes, checked before a paused agent is resumed.
    capacity: Capacity,
}

/// The chat worker, built and ready to run.
pub struct ChatWorker {
    shared: Arc<Shared>,
    runs: TaskTracker,
}

impl ChatWorker {
    /// Builds a replica; `master_key` opens the agents' tokens; `capacity` says whether a
    /// paused agent may be resumed for a message.
    pub async fn build(
        nats: async_nats::Client,
        commands: CommandService,
        master_key: &[u8],
        settings: ChatSettings,
        capacity: Capacity,
    ) -> Result<Self, ChatError> {
        let js = commands.jetstream().clone();
        let worker_id = format!(
            "chat-{}-{}",
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let tokens = AgentTokens::open(&js, master_key).await?;
        let leases = Leases::open(&js, worker_id.clone()).await?;
        Ok(Self {
            shared: Arc::new(Shared {
                js,
                nats,
                commands,
                tokens,
                leases,
                http: crate::runtime_http(),
                settings,
                worker_id,
                watched: pending::Watched::default(),
                capacity,
            }),
            runs: TaskTracker::new(),
        })
    }

    /// This replica's id, as recorded in `RunStarted`.
    pub fn worker_id(&self) -> &str {
        &self.shared.worker_id
    }

    /// Consumes and sweeps until `shutdown`; then stops its runs (recorded as failed, retryable)
    /// and returns once they are recorded.
    pub async fn run(self, shutdown: CancellationToken) {
        let this = &self;
        let consume = supervise("chat", shutdown.clone(), || this.run_once(shutdown.clone()));
        let sweep = async {
            loop {
                if let Err(err) = this.sweep(&shutdown).await {
                    tracing::warn!(error = %err, "sweeping run leases failed");
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(this.shared.settings.sweep_every) => {}
                }
            }
        };
        let proactive = async {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(this.shared.settings.pending_every) => {}
                }
                pending::sweep(&this.shared).await;
            }
        };
        tokio::join!(consume, sweep, proactive);
        self.runs.close();
        self.runs.wait().await;
    }

    async fn run_once(&self, shutdown: CancellationToken) -> Result<(), ChatError> {
        let durable = Durable {
            stream: topology::CONVERSATIONS,
            name: CONSUMER,
            filter: "conv.*.ev",
            ack_wait: Duration::from_secs(60),
        };
        let shutdown = &shutdown;
        consume(&self.shared.js, &durable, shutdown, |message| async move {
            let envelopes = match codec::decode::<ConversationEvent>(&message.payload) {
                Ok(envelopes) => envelopes,
                Err(err) => return Handled::Poison(err.to_string()),
            };
            let events: Vec<_> = envelopes.into_iter().map(|e| e.event).collect();
            // What this commit causes continues the trace of the request that made it.
            let parent = message
                .headers
                .as_ref()
                .and_then(|headers| codec::header(headers, trace::HEADER));
            let reacted = trace::span(
                "chat react",
                trace::SpanKind::Consumer,
                parent,
                self.react(&events, shutdown),
            );
            match reacted.await {
                Ok(()) => Handled::Done,
                Err(reason) => Handled::Retry {
                    reason,
                    after: Duration::from_secs(1),
                },
            }
        })
        .await?;
        Ok(())
    }

    /// Reacts to one commit's events.
    async fn react(
        &self,
        events: &[ConversationEvent],
        shutdown: &CancellationToken,
    ) -> Result<(), String> {
        let Some(conversation_id) = events.first().map(conversation_of) else {
            return Ok(());
        };
        if events
            .iter()
            .any(|e| matches!(e, ConversationEvent::HistoryCleared { .. }))
        {
            self.clear_runtime(conversation_id).await;
        }
        // Whatever frees or fills the head of the queue.
        let may_start = events.iter().any(|e| {
            matches!(
                e,
                ConversationEvent::RunQueued { .. }
                    | ConversationEvent::RunCompleted { .. }
                    | ConversationEvent::RunFailed { .. }
                    | ConversationEvent::RunCancelled { .. }
            )
        });
        if may_start {
            self.try_start(conversation_id, shutdown).await?;
        }
        Ok(())
    }

    /// Starts the conversation's next-up run if nobody runs it.
    async fn try_start(
        &self,
        conversation_id: ConversationId,
        shutdown: &CancellationToken,
    ) -> Result<(), String> {
        let shared = &self.shared;
        let id = conversation_id.to_string();
        let (conversation, _) = shared
            .commands
            .conversations
            .load(&id)
            .await
            .map_err(|err| err.to_string())?;
        let Some(next) = conversation.next_up().cloned() else {
            return Ok(());
        };
        let Some(held) = shared
            .leases
            .acquire(conversation_id, conversation.agent_id, next.run_id)
            .await
            .map_err(|err| err.to_string())?
        else {
            // Another replica is starting or running it (or died doing so: the sweep sees to it).
            return Ok(());
        };
        // Subscribe before starting, so no cancel can slip between the two.
        let signals = match shared
            .nats
            .subscribe(topology::conversation_subject(&id))
            .await
        {
            Ok(signals) => signals,
            Err(err) => {
                let _ = shared.leases.release(held).await;
                return Err(err.to_string());
            }
        };
        let _ = shared.nats.flush().await;
        let history = if conversation.hand_over_history {
            match history::read(
                &shared.commands.conversations,
                conversation_id,
                Until::Message(next.message_id),
            )
            .await
            {
                Ok(history) => Some(history.entries().to_vec()),
                Err(err) => {
                    let _ = shared.leases.release(held).await;
                    return Err(err.to_string());
                }
            }
        } else {
            None
        };
        let job = run::Job {
            conversation_id,
            agent_id: conversation.agent_id,
            user_id: conversation.user_id,
            run_id: next.run_id,
            text: next.text,
            history,
        };
        // Read after the lease stamped the agent as in use (docs/adr/0024).
        let paused = match shared.commands.agents.load(&job.agent_id.to_string()).await {
            Ok((agent, _)) => agent.status == AgentStatus::Paused,
            Err(err) => {
                let _ = shared.leases.release(held).await;
                return Err(err.to_string());
            }
        };
        if paused {
            let shared = self.shared.clone();
            let shutdown = shutdown.clone();
            let parent = trace::current();
            self.runs.spawn(trace::span("chat run", trace::SpanKind::Internal, parent.as_deref(), async move {
                let (mut held, mut signals) = (held, signals);
                match wake::until_awake(&shared, &job, &mut held, &mut signals, &shutdown).await {
                    wake::Woken::Ready => match record_start(&shared, &job).await {
                        Ok(true) => run::run(&shared, job, held, signals, shutdown).await,
                        Ok(false) => release(&shared, held).await,
                        // The lease goes stale and a sweeper takes the run from the queue again.
                        Err(err) => {
                            tracing::warn!(run_id = %job.run_id, error = err, "starting a run after waking its agent failed")
                        }
                    },
                    wake::Woken::Cancelled => release(&shared, held).await,
                    wake::Woken::Abandoned => {}
                }
            }));
            return Ok(());
        }
        match record_start(shared, &job).await {
            Ok(true) => {}
            Ok(false) => {
                release(shared, held).await;
                return Ok(());
            }
            Err(err) => {
                release(shared, held).await;
                return Err(err);
            }
        }
        let shared = self.shared.clone();
        let shutdown = shutdown.clone();
        let parent = trace::current();
        self.runs.spawn(trace::span(
            "chat run",
            trace::SpanKind::Internal,
            parent.as_deref(),
            async move {
                run::run(&shared, job, held, signals, shutdown).await;
            },
        ));
        Ok(())
    }

    /// Closes the runs of dead workers and takes the runs they never started.
    async fn sweep(&self, shutdown: &CancellationToken) -> Result<(), String> {
        let shared = &self.shared;
        let stale_ms = i64::try_from(shared.settings.lease_stale.as_millis()).unwrap_or(i64::MAX);
        let stale = shared
            .leases
            .stale(stale_ms)
            .await
            .map_err(|err| err.to_string())?;
        for (lease, revision) in stale {
            let id = lease.conversation_id.to_string();
            let (conversation, _) = shared
                .commands
                .conversations
                .load(&id)
                .await
                .map_err(|err| err.to_string())?;
            let running = conversation
                .running()
                .filter(|slot| slot.run_id == lease.run_id)
                .is_some();
            if running {
                tracing::warn!(conversation_id = %lease.conversation_id, run_id = %lease.run_id, worker = lease.worker_id, "closing the run of a lost chat worker");
                let meta = CommandMeta::new(Actor::System(shared.worker_id.clone()));
                let command = ConversationCommand::FailRun {
                    run_id: lease.run_id,
                    code: "worker_lost".to_owned(),
                    message: "the chat worker running this message stopped; send it again"
                        .to_owned(),
                    retryable: true,
                };
                match shared
                    .commands
                    .conversations
                    .execute(&id, command, &meta)
                    .await
                {
                    Ok(_) | Err(CommandError::Rejected(_)) => {}
                    Err(other) => return Err(other.to_string()),
                }
            }
            if let Err(err) = shared.leases.remove_stale(&lease, revision).await {
                // Rewritten meanwhile: its holder is alive after all.
                tracing::debug!(run_id = %lease.run_id, error = %err, "stale lease changed");
                continue;
            }
            if !running {
                self.try_start(lease.conversation_id, shutdown).await?;
            }
        }
        Ok(())
    }

    /// Clears the chat's history in the agent's runtime (best effort: the log is the record).
    async fn clear_runtime(&self, conversation_id: ConversationId) {
        let shared = &self.shared;
        let Ok((conversation, _)) = shared
            .commands
            .conversations
            .load(&conversation_id.to_string())
            .await
        else {
            return;
        };
        let agent_id = conversation.agent_id;
        let Ok((agent, _)) = shared.commands.agents.load(&agent_id.to_string()).await else {
            return;
        };
        let (AgentStatus::Running, Some(endpoint)) = (&agent.status, &agent.endpoint_url) else {
            return;
        };
        let Ok(Some(token)) = shared.tokens.get(agent_id).await else {
            return;
        };
        let runtime = runtime::Runtime::new(shared.http.clone(), endpoint, token);
        if let Err(err) = runtime.clear(&conversation_id.to_string()).await {
            tracing::warn!(%conversation_id, error = %err, "clearing the runtime's history failed");
        }
    }
}

/// Records `StartRun` for `job`: `Ok(false)` if the run moved on meanwhile (cancelled, taken
/// over), an error if the log could not be reached.
async fn record_start(shared: &Shared, job: &run::Job) -> Result<bool, String> {
    let meta = CommandMeta::new(Actor::System(shared.worker_id.clone()));
    let command = ConversationCommand::StartRun {
        run_id: job.run_id,
        worker_id: shared.worker_id.clone(),
    };
    match shared
        .commands
        .conversations
        .execute(&job.conversation_id.to_string(), command, &meta)
        .await
    {
        Ok(_) => {
            tracing::info!(conversation_id = %job.conversation_id, run_id = %job.run_id, "run started");
            Ok(true)
        }
        Err(CommandError::Rejected(_)) => Ok(false),
        Err(other) => Err(other.to_string()),
    }
}

/// Gives up a lease (best effort: one left behind goes stale).
async fn release(shared: &Shared, held: lease::Held) {
    if let Err(err) = shared.leases.release(held).await {
        tracing::warn!(error = %err, "releasing a run lease failed");
    }
}

fn conversation_of(event: &ConversationEvent) -> ConversationId {
    use ConversationEvent as E;
    match event {
        E::ConversationStarted {
            conversation_id, ..
        }
        | E::ConversationForked {
            conversation_id, ..
        }
        | E::ConversationRenamed {
            conversation_id, ..
        }
        | E::MessagePosted {
            conversation_id, ..
        }
        | E::RunQueued {
            conversation_id, ..
        }
        | E::RunStarted {
            conversation_id, ..
        }
        | E::RunCompleted {
            conversation_id, ..
        }
        | E::RunFailed {
            conversation_id, ..
        }
        | E::CancelRequested {
            conversation_id, ..
        }
        | E::RunCancelled {
            conversation_id, ..
        }
        | E::AgentMessagePosted {
            conversation_id, ..
        }
        | E::HistoryCleared { conversation_id } => *conversation_id,
    }
}
