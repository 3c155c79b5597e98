//! Who may do what on NATS: one nkey per platform role, each with the least it needs (ADR 13).
//!
//! Nothing connects to Warren's NATS without a key, and a role's key opens only its own
//! subjects: the edge and the command paths publish the commits they own, the projector only
//! reads, an agent runtime has no key at all. The server's config holds public keys only
//! ([`authorization`]); each role's seed is a file of its own ([`NatsKeys`]), written owner-only.
//!
//! What each role may publish (requests to the JetStream API are publishes too) and subscribe:
//!
//! | role | commits it appends | log it reads | KV it writes |
//! |---|---|---|---|
//! | `edge` | `user.*`, `agent.*`, `conv.*.ev`, `host.*` | users, agents, conversations, hosts | `auth_tokens`, `secrets`, `rate_limits`, `idempotency` |
//! | `projector` | — | users, agents, conversations | — |
//! | `deployer` | `agent.*`, `host.*` | users, agents, hosts | `secrets` (agent tokens, hosts' SSH keys), `leases` (hosts') |
//! | `chat` | `conv.*.ev`, `conv.*.live`, `agent.*` (a runtime gone) | users, agents, conversations | `leases` |
//! | `notifier` | — | users | — |
//! | `admin` | everything: `warren migrate` (streams, buckets), operators | | |
//!
//! Replies come back on a per-role inbox prefix (`_INBOX_<role>.>`), so no role can read
//! another's answers.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use nkeys::KeyPair;

use crate::error::{Error, Result};

/// A platform role with its own NATS key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Streams, buckets, operations: `warren migrate`, tests, operators.
    Admin,
    /// The HTTP edge.
    Edge,
    /// The read-model projector (and `warren replay`).
    Projector,
    /// The deployer.
    Deployer,
    /// The chat worker.
    Chat,
    /// The notifier.
    Notifier,
    /// The Telegram bridge.
    Telegram,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 7] = [
        Role::Admin,
        Role::Edge,
        Role::Projector,
        Role::Deployer,
        Role::Chat,
        Role::Notifier,
        Role::Telegram,
    ];

    /// The role's name: its key file is `<name>.nk`, its inbox prefix `_INBOX_<name>`.
    pub fn name(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Edge => "edge",
            Role::Projector => "projector",
            Role::Deployer => "deployer",
            Role::Chat => "chat",
            Role::Notifier => "notifier",
            Role::Telegram => "telegram",
        }
    }

    /// The prefix of the role's reply subjects (give it to the client's `custom_inbox_prefix`).
    pub fn inbox_prefix(self) -> String {
        format!("_INBOX_{}", self.name())
    }

    /// What the role may publish and subscribe to.
    pub fn permissions(self) -> Permissions {
        use Access::*;
        const TELEGRAM: &str = "TELEGRAM";
        let mut p = Permissions::default();
        if self == Role::Admin {
            p.publish.push(">".into());
            p.subscribe.push(">".into());
            return p;
        }
        p.publish.push("$JS.API.INFO".into());
        p.subscribe.push(format!("{}.>", self.inbox_prefix()));
        let grants: &[(Access, &str)] = match self {
            Role::Admin => &[],
            // A channel, and Telegram's webhook into the bridge's queue.
            Role::Edge => &[
                (Append, "telegram.updates"),
                // Admins register and remove SSH hosts.
                (Append, "host.*"),
                (Read, HOSTS),
            ],
            Role::Projector => &[(Follow, USERS), (Follow, AGENTS), (Follow, CONVERSATIONS)],
            Role::Deployer => &[
                (Append, "agent.*"),
                // Placements on SSH hosts, their pinned keys, down and up.
                (Append, "host.*"),
                (Read, HOSTS),
                (Read, USERS),
                (Follow, AGENTS),
                (KvWrite, "secrets"),
                // The idle pause reads when each agent was last used …
                (KvRead, "agent_activity"),
                // … and each reconciliation records what each sandbox uses.
                (KvWrite, "sandbox_stats"),
                // Which deployer reconciles which SSH host.
                (KvWrite, "leases"),
                (KvList, "leases"),
            ],
            Role::Chat => &[
                // A runtime that vanished mid-run marks its agent failed.
                (Append, "agent.*"),
                (Append, "conv.*.ev"),
                (Append, "conv.*.live"),
                // A running run watches its conversation's facts for a cancel request.
                (Watch, "conv.*.ev"),
                (Read, USERS),
                (Read, AGENTS),
                (Follow, CONVERSATIONS),
                (KvRead, "secrets"),
                (KvWrite, "leases"),
                (KvList, "leases"),
                // Holding a run stamps its agent as in use (the idle pause's clock).
                (KvWrite, "agent_activity"),
            ],
            // Registrations, and the agents' sandbox alerts.
            Role::Notifier => &[(Follow, USERS), (Follow, AGENTS)],
            // A channel like the edge, plus its queue of updates and its own bucket.
            Role::Telegram => &[
                (Append, "telegram.updates"),
                (Follow, TELEGRAM),
                (KvWrite, "telegram"),
            ],
        };
        let channel = if matches!(self, Role::Edge | Role::Telegram) {
            CHANNEL
        } else {
            &[]
        };
        for (access, target) in channel.iter().chain(grants) {
            access.grant(target, &mut p);
        }
        p
    }
}

const USERS: &str = "USERS";
const AGENTS: &str = "AGENTS";
const HOSTS: &str = "HOSTS";
const CONVERSATIONS: &str = "CONVERSATIONS";

/// What a channel needs (the edge, the Telegram bridge): the application layer's writes, reads
/// and buckets.
const CHANNEL: &[(Access, &str)] = &[
    (Access::Append, "user.*"),
    (Access::Append, "agent.*"),
    (Access::Append, "conv.*.ev"),
    (Access::Follow, USERS),
    (Access::Follow, AGENTS),
    (Access::Follow, CONVERSATIONS),
    (Access::KvWrite, "auth_tokens"),
    // Open connections watch sessions for logouts and revocations.
    (Access::KvList, "auth_tokens"),
    (Access::KvWrite, "secrets"),
    (Access::KvWrite, "rate_limits"),
    (Access::KvWrite, "idempotency"),
    // What each sandbox uses, for an agent's status.
    (Access::KvRead, "sandbox_stats"),
];

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Role::ALL
            .into_iter()
            .find(|role| role.name() == s)
            .ok_or_else(|| format!("unknown role {s:?}"))
    }
}

/// Kinds of access, each a set of subjects.
#[derive(Clone, Copy)]
enum Access {
    /// Publish commits to these subjects.
    Append,
    /// Subscribe (core NATS) to these subjects.
    Watch,
    /// Read a stream's messages by direct get (load aggregates).
    Read,
    /// [`Access::Read`] plus consumers on the stream (projections, workers, live follows).
    Follow,
    /// Read a KV bucket's keys.
    KvRead,
    /// Read and write a KV bucket's keys.
    KvWrite,
    /// List a KV bucket's keys (an ordered consumer on its stream).
    KvList,
}

impl Access {
    fn grant(self, target: &str, p: &mut Permissions) {
        let read = |stream: &str, p: &mut Permissions| {
            p.publish.extend([
                format!("$JS.API.STREAM.INFO.{stream}"),
                format!("$JS.API.DIRECT.GET.{stream}"),
                format!("$JS.API.DIRECT.GET.{stream}.>"),
                format!("$JS.API.STREAM.MSG.GET.{stream}"),
            ]);
        };
        let consume = |stream: &str, p: &mut Permissions| {
            p.publish.extend([
                format!("$JS.API.CONSUMER.CREATE.{stream}"),
                format!("$JS.API.CONSUMER.CREATE.{stream}.>"),
                format!("$JS.API.CONSUMER.DURABLE.CREATE.{stream}.*"),
                format!("$JS.API.CONSUMER.INFO.{stream}.*"),
                format!("$JS.API.CONSUMER.DELETE.{stream}.*"),
                format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.*"),
                format!("$JS.ACK.{stream}.>"),
            ]);
        };
        match self {
            Access::Append => p.publish.push(target.to_owned()),
            Access::Watch => p.subscribe.push(target.to_owned()),
            Access::Read => read(target, p),
            Access::Follow => {
                read(target, p);
                consume(target, p);
            }
            Access::KvRead => read(&format!("KV_{target}"), p),
            Access::KvWrite => {
                read(&format!("KV_{target}"), p);
                p.publish.push(format!("$KV.{target}.>"));
            }
            Access::KvList => {
                consume(&format!("KV_{target}"), p);
                p.publish.push("$JS.FC.>".into());
            }
        }
    }
}

/// Subjects a role may publish to and subscribe to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Permissions {
    /// Allowed publish subjects (wildcards allowed).
    pub publish: Vec<String>,
    /// Allowed subscribe subjects.
    pub subscribe: Vec<String>,
}

/// The `authorization` block of a nats-server config: every role's public key with its
/// permissions. Nothing else may connect.
pub fn authorization(keys: &NatsKeys) -> Result<String> {
    let mut out = String::from("authorization {\n  users = [\n");
    for role in Role::ALL {
        let permissions = role.permissions();
        let list = |subjects: &[String]| {
            subjects
                .iter()
                .map(|s| format!("\"{s}\""))
                .collect::<Vec<_>>()
                .join(", ")
        };
        out.push_str(&format!(
            "    # {role}\n    {{ nkey: \"{key}\", permissions: {{ publish: {{ allow: [{publish}] }}, \
             subscribe: {{ allow: [{subscribe}] }} }} }}\n",
            key = keys.public_key(role)?,
            publish = list(&permissions.publish),
            subscribe = list(&permissions.subscribe),
        ));
    }
    out.push_str("  ]\n}\n");
    Ok(out)
}

/// How often a client pings its server. A client gives a server up (and moves to another of a
/// cluster's nodes) when three pings go unanswered: a node cut off by a partition drops no TCP
/// connection, so without pings a client would wait on it for minutes (the default interval is
/// a minute), every request timing out meanwhile.
pub const PING_INTERVAL: std::time::Duration = std::time::Duration::from_secs(3);

/// How `role` connects: its name, its inbox prefix, pings every [`PING_INTERVAL`] and, given its
/// seed, its key.
pub fn options(seed: Option<String>, role: Role) -> async_nats::ConnectOptions {
    let options = async_nats::ConnectOptions::new()
        .name(format!("warren-{role}"))
        .ping_interval(PING_INTERVAL)
        .custom_inbox_prefix(role.inbox_prefix());
    match seed {
        Some(seed) => options.nkey(seed),
        None => options,
    }
}

/// The servers of a `WARREN_NATS_URL`: one URL, or several separated by commas (a cluster's
/// nodes; the client picks one and fails over to the others).
pub fn servers(url: &str) -> Vec<&str> {
    url.split(',')
        .map(str::trim)
        .filter(|server| !server.is_empty())
        .collect()
}

/// Connects to `url` (see [`servers`]) as `role`, with its key from `keys` when given.
pub async fn connect(url: &str, keys: Option<&NatsKeys>, role: Role) -> Result<async_nats::Client> {
    let seed = keys.map(|keys| keys.seed(role)).transpose()?;
    options(seed, role)
        .connect(servers(url))
        .await
        .map_err(|source| Error::NatsConnect {
            url: url.to_owned(),
            role: role.name(),
            source,
        })
}

/// Writes what a nats-server of `deploy/nats/` includes: `auth.conf` (every role's public key
/// and permissions) and `cluster-auth.conf` (a password that routes between the cluster's
/// nodes must present, with the routes that present it), and the roles' keys under
/// `credentials/` (generated once; hand each role its own file). Returns the keys.
pub fn write_server_files(dir: &Path, route_hosts: &[&str]) -> Result<NatsKeys> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
    let keys = NatsKeys::ensure(dir.join("credentials"))?;
    let auth = dir.join("auth.conf");
    let _ = std::fs::remove_file(&auth);
    write_private(
        &auth,
        format!(
            "# Generated by `warren nats-auth`: only these keys may connect (ADR 13).\n{}",
            authorization(&keys)?
        )
        .as_bytes(),
    )?;
    let route_password = keys.route_password()?;
    let routes = route_hosts
        .iter()
        .map(|host| format!("    nats-route://route:{route_password}@{host}:6222"))
        .collect::<Vec<_>>()
        .join("\n");
    let cluster = dir.join("cluster-auth.conf");
    let _ = std::fs::remove_file(&cluster);
    write_private(
        &cluster,
        format!(
            "# Generated by `warren nats-auth`: a node joins the cluster only with this password.\n\
             authorization {{\n  user: route\n  password: \"{route_password}\"\n}}\n\
             # Every node lists all of them (its own route is ignored).\nroutes: [\n{routes}\n]\n"
        )
        .as_bytes(),
    )?;
    Ok(keys)
}

/// A directory of role seeds, `<role>.nk`, each readable by its owner only.
#[derive(Clone, Debug)]
pub struct NatsKeys {
    dir: PathBuf,
}

impl NatsKeys {
    /// The keys in `dir`, generating any that are missing (the directory is made owner-only).
    pub fn ensure(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_owned();
        create_private_dir(&dir)?;
        let keys = Self { dir };
        for role in Role::ALL {
            let path = keys.path(role);
            if path.exists() {
                continue;
            }
            let seed = KeyPair::new_user()
                .seed()
                .map_err(|e| Error::io("generate nkey", &path, std::io::Error::other(e)))?;
            write_private(&path, seed.as_bytes())?;
        }
        Ok(keys)
    }

    /// The keys in `dir`, which must exist.
    pub fn open(dir: impl AsRef<Path>) -> Self {
        Self {
            dir: dir.as_ref().to_owned(),
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The seed file of `role`.
    pub fn path(&self, role: Role) -> PathBuf {
        self.dir.join(format!("{}.nk", role.name()))
    }

    /// The seed of `role` (what the client signs the server's challenge with).
    pub fn seed(&self, role: Role) -> Result<String> {
        let path = self.path(role);
        let seed = std::fs::read_to_string(&path).map_err(|e| Error::io("read", &path, e))?;
        Ok(seed.trim().to_owned())
    }

    /// The password cluster routes present (derived from the admin key, so it is as secret
    /// as that key and needs no file of its own).
    fn route_password(&self) -> Result<String> {
        let seed = self.seed(Role::Admin)?;
        let pair = KeyPair::from_seed(&seed).map_err(|e| {
            Error::io(
                "parse nkey seed",
                self.path(Role::Admin),
                std::io::Error::other(e),
            )
        })?;
        let signature = pair
            .sign(b"warren cluster route")
            .map_err(|e| Error::io("sign", self.path(Role::Admin), std::io::Error::other(e)))?;
        Ok(signature[..24]
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect())
    }

    /// The public key of `role` (what the server config lists).
    pub fn public_key(&self, role: Role) -> Result<String> {
        let path = self.path(role);
        let pair = KeyPair::from_seed(&self.seed(role)?)
            .map_err(|e| Error::io("parse nkey seed", &path, std::io::Error::other(e)))?;
        Ok(pair.public_key())
    }
}

/// Creates `dir` (and parents) and makes it owner-only.
pub fn create_private_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::io("restrict", dir, e))?;
    }
    Ok(())
}

/// Writes a new owner-only file (0600); never overwrites.
pub fn write_private(path: &Path, contents: &[u8]) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .map_err(|e| Error::io("create", path, e))?;
    file.write_all(contents)
        .map_err(|e| Error::io("write", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_url_names_each_node() {
        assert_eq!(servers("nats://a:4222"), ["nats://a:4222"]);
        assert_eq!(
            servers("nats://a:4222, nats://b:4222,nats://c:4222,"),
            ["nats://a:4222", "nats://b:4222", "nats://c:4222"]
        );
    }

    #[test]
    fn the_projector_and_the_notifier_append_nothing_and_no_role_but_admin_manages_streams() {
        for role in [Role::Projector, Role::Notifier] {
            let p = role.permissions();
            assert!(
                p.publish
                    .iter()
                    .all(|s| s.starts_with("$JS.API.") || s.starts_with("$JS.ACK.")),
                "{role}: {p:?}"
            );
        }
        for role in Role::ALL.into_iter().filter(|r| *r != Role::Admin) {
            let p = role.permissions();
            assert!(
                !p.publish.iter().any(|s| s.contains("STREAM.CREATE")
                    || s.contains("STREAM.UPDATE")
                    || s.contains("STREAM.DELETE")
                    || s.contains("STREAM.PURGE")
                    || s.contains("MSG.DELETE")
                    || s == ">"),
                "{role}: {p:?}"
            );
            assert_eq!(p.subscribe[0], format!("_INBOX_{role}.>"));
        }
    }

    #[test]
    fn keys_are_generated_once_owner_only_and_listed_by_public_key() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let keys = NatsKeys::ensure(dir.path().join("nats")).expect("keys");
        let first = keys.seed(Role::Edge).expect("seed");
        assert!(first.starts_with("SU"), "a user seed");
        let again = NatsKeys::ensure(dir.path().join("nats")).expect("keys");
        assert_eq!(again.seed(Role::Edge).expect("seed"), first);
        let mode = std::fs::metadata(keys.path(Role::Edge))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let dir_mode = std::fs::metadata(keys.dir())
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        let block = authorization(&keys).expect("block");
        assert!(
            block.contains(&keys.public_key(Role::Chat).expect("key")),
            "{block}"
        );
        assert!(
            !block.contains(&first),
            "seeds never reach the server config"
        );
    }
}
