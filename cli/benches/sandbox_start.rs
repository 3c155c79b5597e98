//! Create-to-running latency of an agent, per sandbox, side by side in one run: from the
//! `CreateAgent` command to the agent's `running` status in the log, through the real deployer
//! (the six steps, each recorded) on a real nats-server, for the `process` provisioner and the
//! `docker` one (cold: a new container each time; warm: taken from a warm pool of
//! `WARREN_BENCH_POOL` started containers, default 2, full before each creation, as on a
//! platform that is not creating agents faster than it refills), and resume-from-pause
//! (`ResumeAgent` to the runtime answering again) when the deployer acts on pauses.
//!
//! The `ssh` provisioner's row deploys onto a "VM": a container running `sshd` on a Docker
//! network of the bench's own (the tests' image, `warren-test-sshd`); its first agent uploads the
//! runtime binary (cold host), the others find it there; then the same host keeps a warm pool
//! of waiting runtimes (docs/adr/0040-ssh-warm-pool.md) that new agents take.
//!
//! `cargo build --release -p warren-agent && cargo bench -p warren-cli --bench sandbox_start`
//! (env: `WARREN_BENCH_AGENTS`, default 20). Docker needs root (the sandbox firewall) and builds
//! the `warren-agent:bench` image first (debootstrap, cached in WARREN_IMAGE_CACHE_DIR, else
//! ~/.cache/warren).

#[path = "../tests/ssh_support/mod.rs"]
mod ssh_support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use warren_commands::{CommandMeta, CommandService};
use warren_domain::Actor;
use warren_domain::agent::{AgentCommand, AgentStatus, Backend, RuntimeKind};
use warren_domain::ids::{AgentId, UserId};
use warren_testkit::TestNats;
use warren_workers::deployer::docker::{self, DockerProvisioner, DockerSettings, image};
use warren_workers::deployer::process::ProcessProvisioner;
use warren_workers::deployer::provisioner::Provisioner;
use warren_workers::deployer::{Deployer, DeployerSettings};

const MASTER_KEY: [u8; 32] = [7; 32];
const IMAGE: &str = "warren-agent:bench";
/// Targets of issue 12 on this machine.
const DOCKER_COLD_P50: Duration = Duration::from_secs(3);
const WARM_POOL_P50: Duration = Duration::from_millis(500);
const RESUME_P50: Duration = Duration::from_secs(1);

fn agent_bin() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_warren"))
        .parent()
        .expect("target dir")
        .join("warren-agent");
    assert!(
        bin.is_file(),
        "{} is missing: cargo build --release -p warren-agent",
        bin.display()
    );
    bin
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

struct Bench {
    commands: CommandService,
    owner: UserId,
}

impl Bench {
    async fn status(&self, agent: AgentId) -> AgentStatus {
        self.commands
            .agents
            .load(&agent.to_string())
            .await
            .expect("load")
            .0
            .status
    }

    async fn until(&self, agent: AgentId, wanted: AgentStatus) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let status = self.status(agent).await;
            assert_ne!(status, AgentStatus::Failed, "the deployment failed");
            if status == wanted {
                return;
            }
            assert!(Instant::now() < deadline, "{agent} never became {wanted:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn command(&self, agent: AgentId, command: AgentCommand) {
        self.commands
            .agents
            .execute(
                &agent.to_string(),
                command,
                &CommandMeta::new(Actor::User(self.owner)),
            )
            .await
            .expect("command");
    }

    /// Creates an agent and waits until it runs; how long that took.
    async fn create(&self, backend: Backend) -> (AgentId, Duration) {
        let agent = AgentId::new();
        let started = Instant::now();
        self.command(
            agent,
            AgentCommand::CreateAgent {
                agent_id: agent,
                owner_id: self.owner,
                name: "bench".into(),
                system_prompt: "Be brief.".into(),
                model: "bench".into(),
                runtime: RuntimeKind::Warren,
                backend,
                host: None,
                deployment_id: Uuid::now_v7(),
            },
        )
        .await;
        self.until(agent, AgentStatus::Running).await;
        (agent, started.elapsed())
    }
}

/// How one run deploys: a sandbox, with a warm pool of docker containers or without.
struct Run<'a> {
    label: &'a str,
    sandbox: Arc<dyn Provisioner>,
    /// The docker provisioner and the pool's size, when it keeps one.
    pool: Option<(&'a DockerProvisioner, usize)>,
    /// Whether to measure resumes too.
    resumes: bool,
    /// An SSH host to deploy on (with the `ssh` provisioner, the sandbox being for others).
    ssh: Option<&'a SshTarget>,
    /// The SSH host's container and the warm pool it keeps, when it keeps one.
    ssh_pool: Option<(&'a str, usize)>,
}

/// A host for the `ssh` row.
struct SshTarget {
    address: String,
    private_key: String,
}

/// Runs one deployer as `run` says and measures `n` creations (and resumes, if asked and
/// pausing works).
async fn measure(run: Run<'_>, data_dir: &Path, n: usize) -> (Vec<Duration>, Vec<Duration>) {
    let Run {
        label,
        sandbox,
        pool,
        resumes: measure_resumes,
        ssh,
        ssh_pool,
    } = run;
    let nats = TestNats::start().await;
    let commands = CommandService::start(nats.jetstream().await, &Default::default())
        .await
        .expect("commands");
    let settings = DeployerSettings {
        data_dir: data_dir.to_owned(),
        agent_bin: Some(agent_bin()),
        reconcile_every: Duration::from_secs(30),
        health_timeout: Duration::from_secs(30),
        default_provider: None,
        platform_url: "http://127.0.0.1:9".into(),
        stop_agents_on_shutdown: true,
        idle_pause: None,
        warm_pool: pool
            .map(|(_, size)| size)
            .or(ssh_pool.map(|(_, size)| size))
            .unwrap_or(0),
    };
    let warm = settings.warm_spec();
    let (sandbox, fleet, backend) = match ssh {
        Some(target) => {
            let fleet = ssh_fleet(&commands, target, data_dir).await;
            (fleet.clone(), Some(fleet), Backend::Ssh)
        }
        None => (sandbox, None, Backend::Process),
    };
    let local: Arc<dyn Provisioner> = match &fleet {
        Some(_) => Arc::new(ProcessProvisioner::new(data_dir, Some(agent_bin()))),
        None => sandbox.clone(),
    };
    let mut deployer = Deployer::build(commands.clone(), &MASTER_KEY, settings, local, Vec::new())
        .await
        .expect("deployer");
    if let Some(fleet) = fleet {
        deployer = deployer.with_ssh(fleet);
    }
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(deployer.run(shutdown.clone()));
    let bench = Bench {
        commands,
        owner: UserId::new(),
    };
    let mut creates = Vec::with_capacity(n);
    let mut agents = Vec::with_capacity(n);
    for _ in 0..n {
        if let Some((docker, size)) = pool {
            let deadline = Instant::now() + Duration::from_secs(120);
            while docker.warm_ready(&warm).await.expect("the warm pool") < size {
                assert!(Instant::now() < deadline, "the warm pool never filled");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        if let Some((vm, size)) = ssh_pool {
            let deadline = Instant::now() + Duration::from_secs(120);
            let ready = || {
                ssh_support::exec(vm, "ls /var/lib/warren/pool/*/free 2>/dev/null")
                    .lines()
                    .count()
            };
            while ready() < size {
                assert!(
                    Instant::now() < deadline,
                    "the host's warm pool never filled"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let (agent, took) = bench.create(backend).await;
        creates.push(took);
        agents.push(agent);
    }
    // Resume from pause: PauseAgent, wait until the runtime is frozen, then time ResumeAgent to
    // the runtime answering again.
    let mut resumes = Vec::new();
    for agent in agents.iter().filter(|_| measure_resumes) {
        bench.command(*agent, AgentCommand::PauseAgent).await;
        let frozen = async {
            loop {
                if let Ok(actual) = sandbox.actual().await
                    && actual.iter().any(|a| {
                        a.agent_id == *agent
                            && a.state == warren_workers::deployer::provisioner::ActualState::Paused
                    })
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        if tokio::time::timeout(Duration::from_secs(5), frozen)
            .await
            .is_err()
        {
            eprintln!("{label}: the deployer does not pause runtimes: no resume figures");
            resumes.clear();
            break;
        }
        let started = Instant::now();
        bench.command(*agent, AgentCommand::ResumeAgent).await;
        while !sandbox.healthy(*agent).await {
            assert!(started.elapsed() < Duration::from_secs(60), "never resumed");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        resumes.push(started.elapsed());
    }
    for agent in &agents {
        bench.command(*agent, AgentCommand::DeleteAgent).await;
    }
    for agent in &agents {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !bench
            .commands
            .agents
            .load(&agent.to_string())
            .await
            .expect("load")
            .0
            .destroyed
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    shutdown.cancel();
    let _ = running.await;
    (creates, resumes)
}

/// The `ssh` provisioner over `target`, registered as host `bench`.
async fn ssh_fleet(
    commands: &CommandService,
    target: &SshTarget,
    data_dir: &Path,
) -> Arc<dyn Provisioner> {
    use warren_commands::secrets::HostKeys;
    use warren_domain::host::{HostCommand, HostSpec};
    let keys = HostKeys::open(commands.jetstream(), &MASTER_KEY)
        .await
        .expect("host keys");
    keys.put("bench", &target.private_key).await.expect("key");
    commands
        .hosts
        .execute(
            "bench",
            HostCommand::RegisterHost {
                name: "bench".into(),
                spec: HostSpec {
                    address: target.address.clone(),
                    port: 22,
                    user: "root".into(),
                    capacity: 1000,
                    labels: Default::default(),
                    platform_url: Some("http://127.0.0.1:9".into()),
                    engine: Default::default(),
                },
                host_key: None,
            },
            &CommandMeta::new(Actor::System("bench".into())),
        )
        .await
        .expect("register the host");
    Arc::new(
        warren_workers::deployer::ssh::SshFleet::new(
            commands.clone(),
            keys,
            &data_dir.join("ssh"),
            &agent_bin(),
        )
        .expect("the ssh provisioner"),
    )
}

fn row(label: &str, mut samples: Vec<Duration>, target: Option<Duration>) {
    if samples.is_empty() {
        println!("| {label} | 0 | – | – | – | not measured |");
        return;
    }
    samples.sort();
    let p50 = percentile(&samples, 0.5);
    let p99 = percentile(&samples, 0.99);
    let verdict = match target {
        Some(target) if p50 < target => format!("p50 < {} ms ✅", ms(target)),
        Some(target) => format!("p50 < {} ms ❌", ms(target)),
        None => "–".into(),
    };
    println!(
        "| {label} | {} | {:.0} | {:.0} | {:.0} | {verdict} |",
        samples.len(),
        ms(p50),
        ms(p99),
        ms(*samples.last().expect("samples")),
    );
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("WARREN_BENCH_AGENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let dir = tempfile::tempdir().expect("tempdir");

    let process: Arc<dyn Provisioner> =
        Arc::new(ProcessProvisioner::new(dir.path(), Some(agent_bin())));
    let (process_creates, process_resumes) = measure(
        Run {
            label: "process",
            sandbox: process,
            pool: None,
            resumes: true,
            ssh: None,
            ssh_pool: None,
        },
        dir.path(),
        n,
    )
    .await;

    let engine = docker::connect("unix:///var/run/docker.sock")
        .await
        .expect("docker");
    let cache = std::env::var_os("WARREN_IMAGE_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/warren")))
        .expect("a cache dir");
    image::build(
        &engine,
        &image::ImageRecipe {
            tag: IMAGE.into(),
            agent_bin: agent_bin(),
            cache_dir: cache,
            mirror: "http://deb.debian.org/debian".into(),
        },
    )
    .await
    .expect("image");
    let network = format!("warren-bench-{}", &Uuid::new_v4().simple().to_string()[..8]);
    let relay = warren_deploy::free_port().expect("port");
    let docker_settings = DockerSettings {
        image: IMAGE.into(),
        network: network.clone(),
        subnet: "10.212.0.0/24".into(),
        relay_port: relay,
        ..DockerSettings::default()
    };
    let sandbox = Arc::new(
        DockerProvisioner::start(docker_settings, "http://127.0.0.1:9")
            .await
            .expect("docker sandboxes"),
    );
    let (docker_creates, docker_resumes) = measure(
        Run {
            label: "docker",
            sandbox: sandbox.clone(),
            pool: None,
            resumes: true,
            ssh: None,
            ssh_pool: None,
        },
        dir.path(),
        n,
    )
    .await;
    let pool_size: usize = std::env::var("WARREN_BENCH_POOL")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let (warm_creates, _) = measure(
        Run {
            label: "docker warm pool",
            sandbox: sandbox.clone(),
            pool: Some((&sandbox, pool_size)),
            resumes: false,
            ssh: None,
            ssh_pool: None,
        },
        dir.path(),
        n,
    )
    .await;
    drop(sandbox);
    let _ = engine.remove_network(&network).await;
    docker::network::remove_firewall(&network).await;

    // A "VM" reached over SSH: the first agent uploads the runtime, the others find it.
    ssh_support::ensure_image().await;
    let keys = tempfile::tempdir().expect("tempdir");
    let (private_key, public_key) = ssh_support::key_pair(keys.path());
    let lab = ssh_support::Lab::new(&public_key);
    let (vm, address) = lab.start_vm(0);
    lab.host_key(&vm).await;
    let target = SshTarget {
        address,
        private_key,
    };
    let (mut ssh_creates, ssh_resumes) = measure(
        Run {
            label: "ssh",
            sandbox: Arc::new(ProcessProvisioner::new(dir.path(), Some(agent_bin()))),
            pool: None,
            resumes: true,
            ssh: Some(&target),
            ssh_pool: None,
        },
        dir.path(),
        n,
    )
    .await;
    let ssh_first = ssh_creates.remove(0);
    // The same host keeping a warm pool (the runtime is there already).
    let (ssh_warm_creates, _) = measure(
        Run {
            label: "ssh warm pool",
            sandbox: Arc::new(ProcessProvisioner::new(dir.path(), Some(agent_bin()))),
            pool: None,
            resumes: false,
            ssh: Some(&target),
            ssh_pool: Some((&vm, pool_size)),
        },
        dir.path(),
        n,
    )
    .await;
    drop(lab);

    println!("\nCreate-to-running and resume latency, {n} agents each, one at a time:\n");
    println!("| sandbox | agents | p50 ms | p99 ms | max ms | target |");
    println!("|---|---|---|---|---|---|");
    row("process, create", process_creates, None);
    row("docker cold, create", docker_creates, Some(DOCKER_COLD_P50));
    row(
        &format!("docker warm pool ({pool_size}), create"),
        warm_creates,
        Some(WARM_POOL_P50),
    );
    row(
        "ssh, first agent on a host (uploads the runtime)",
        vec![ssh_first],
        None,
    );
    row("ssh, create", ssh_creates, None);
    row(
        &format!("ssh warm pool ({pool_size}), create"),
        ssh_warm_creates,
        Some(WARM_POOL_P50),
    );
    row("process, resume from pause", process_resumes, None);
    row(
        "docker, resume from pause",
        docker_resumes,
        Some(RESUME_P50),
    );
    row("ssh, resume from pause", ssh_resumes, None);
}
