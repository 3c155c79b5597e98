//! The Host aggregate: a machine the `ssh` provisioner places agents on (an existing VM reached
//! over SSH, docs/adr/0039-ssh-hosts.md).
//!
//! An admin registers a host (its address, SSH user and port, how many agents it takes, its
//! labels, and the URL its agents reach the platform on); its SSH private key is a secret kept
//! beside the log, never in it. The deployer pins the host's SSH key on first contact
//! (`HostKeyPinned`; an admin may pin it up front) and checks it on every later one. Placing an
//! agent on a host is a decision of this aggregate, so two deployers cannot fill a host beyond
//! its capacity: `PlaceAgent` is refused (`host_full`) once the host holds `capacity` agents,
//! and placing an agent already there changes nothing. A destroyed agent is released.
//!
//! A host's name is its aggregate id (`host.<name>`): lowercase letters, digits and dashes.

use crate::aggregate::impl_aggregate;
use crate::ids::AgentId;
use crate::text::is_http_url;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use thiserror::Error;

/// The most agents one host may be registered for.
pub const MAX_CAPACITY: u32 = 10_000;
/// The most labels one host carries.
pub const MAX_LABELS: usize = 16;

/// What an admin registers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostSpec {
    /// The address the deployer (and the chat workers) reach it on: a DNS name or an IP.
    pub address: String,
    /// Its SSH port.
    pub port: u16,
    /// The SSH user (root, or one that may `sudo` without a password).
    pub user: String,
    /// How many agents it runs at most.
    pub capacity: u32,
    /// Labels an agent's placement may ask for.
    pub labels: BTreeSet<String>,
    /// The platform's URL as this host's agents reach it (their model proxy and session
    /// tools); `None`: the platform's default runtime URL.
    pub platform_url: Option<String>,
    /// How its agents run: as processes under users of their own (`ssh`, what hosts registered
    /// before this field record), or in containers of its Docker engine (`docker`).
    #[serde(default, skip_serializing_if = "HostEngine::is_ssh")]
    pub engine: HostEngine,
}

/// How a host runs its agents (docs/adr/0041-docker-hosts.md).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostEngine {
    /// Each agent a process under a Unix user of its own, kept up by a supervisor.
    #[default]
    Ssh,
    /// Each agent a locked-down container of the host's Docker engine (the `docker`
    /// provisioner, reached through the SSH connection).
    Docker,
}

impl HostEngine {
    /// Whether this is the default, [`HostEngine::Ssh`].
    pub fn is_ssh(&self) -> bool {
        matches!(self, Self::Ssh)
    }

    /// `ssh` or `docker`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Ssh => "ssh",
            Self::Docker => "docker",
        }
    }
}

/// A command to a host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostCommand {
    /// Admin: register the host `name`.
    RegisterHost {
        /// Its name (the aggregate id).
        name: String,
        /// What it is.
        spec: HostSpec,
        /// Its SSH public key (`<type> <base64>`), when the admin pins it up front.
        host_key: Option<String>,
    },
    /// Deployer: the host's SSH key, as first seen. Pinning the pinned key again changes
    /// nothing; another key is refused (`host_key_mismatch`).
    PinHostKey {
        /// `<type> <base64>`.
        host_key: String,
    },
    /// Admin: the host's key changed legitimately (a reinstall): pin `host_key`, or with
    /// `None` forget the pin so the next contact pins what the host presents.
    RepinHostKey {
        /// `<type> <base64>`, or `None`.
        host_key: Option<String>,
    },
    /// Deployer: `agent_id` runs here (refused when the host is full, down or removed).
    PlaceAgent {
        /// The agent.
        agent_id: AgentId,
    },
    /// Deployer: `agent_id` no longer runs here (destroyed, or moved). Unknown agents: no-op.
    ReleaseAgent {
        /// The agent.
        agent_id: AgentId,
    },
    /// Deployer: the host stopped answering (or answers otherwise than before), or answers
    /// again.
    MarkHost {
        /// Whether it answers.
        up: bool,
        /// What was seen.
        reason: String,
    },
    /// Admin: forget the host (refused while agents are placed on it).
    RemoveHost,
}

/// A fact about a host, stored as `{"type": "<variant>", "data": {…}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum HostEvent {
    /// An admin registered the host.
    HostRegistered {
        /// Its name.
        name: String,
        /// What it is.
        spec: HostSpec,
    },
    /// The host's SSH key was pinned: every later connection must present it.
    HostKeyPinned {
        /// Its name.
        name: String,
        /// `<type> <base64>`.
        host_key: String,
    },
    /// An admin forgot the host's pinned key: the next contact pins what the host presents.
    HostKeyForgotten {
        /// Its name.
        name: String,
    },
    /// An agent was placed on the host.
    AgentPlaced {
        /// The host.
        name: String,
        /// The agent.
        agent_id: AgentId,
    },
    /// An agent left the host.
    AgentReleased {
        /// The host.
        name: String,
        /// The agent.
        agent_id: AgentId,
    },
    /// The host stopped answering.
    HostDown {
        /// Its name.
        name: String,
        /// What was seen.
        reason: String,
    },
    /// The host answers again.
    HostUp {
        /// Its name.
        name: String,
    },
    /// An admin removed the host.
    HostRemoved {
        /// Its name.
        name: String,
    },
}

impl HostEvent {
    /// The stable type string.
    pub fn event_type(&self) -> &'static str {
        match self {
            HostEvent::HostRegistered { .. } => "HostRegistered",
            HostEvent::HostKeyPinned { .. } => "HostKeyPinned",
            HostEvent::HostKeyForgotten { .. } => "HostKeyForgotten",
            HostEvent::AgentPlaced { .. } => "AgentPlaced",
            HostEvent::AgentReleased { .. } => "AgentReleased",
            HostEvent::HostDown { .. } => "HostDown",
            HostEvent::HostUp { .. } => "HostUp",
            HostEvent::HostRemoved { .. } => "HostRemoved",
        }
    }

    /// Every host event is at version 1.
    pub fn event_version(&self) -> &'static str {
        "1"
    }
}

/// A refused host command.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum HostError {
    /// No such host.
    #[error("host not found ({command})")]
    NotFound {
        /// The refused command's name.
        command: &'static str,
    },
    /// The name is taken (also by a removed host: names are not reused).
    #[error("host {name} already exists")]
    AlreadyExists {
        /// The name.
        name: String,
    },
    /// A command field is malformed.
    #[error("invalid {field}: {reason}")]
    InvalidInput {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The host holds `capacity` agents.
    #[error("host {name} is full ({capacity} agents)")]
    HostFull {
        /// The host.
        name: String,
        /// Its capacity.
        capacity: u32,
    },
    /// The host is down: nothing new is placed on it.
    #[error("host {name} is down")]
    HostDown {
        /// The host.
        name: String,
    },
    /// Another key than the pinned one.
    #[error("host {name} presented another SSH key than the one pinned")]
    HostKeyMismatch {
        /// The host.
        name: String,
    },
    /// Agents are still placed on the host.
    #[error("host {name} still runs {agents} agents")]
    HostInUse {
        /// The host.
        name: String,
        /// How many.
        agents: usize,
    },
}

impl HostError {
    /// The stable machine code.
    pub fn code(&self) -> &'static str {
        match self {
            HostError::NotFound { .. } => "not_found",
            HostError::AlreadyExists { .. } => "already_exists",
            HostError::InvalidInput { .. } => "invalid_input",
            HostError::HostFull { .. } => "host_full",
            HostError::HostDown { .. } => "host_down",
            HostError::HostKeyMismatch { .. } => "host_key_mismatch",
            HostError::HostInUse { .. } => "host_in_use",
        }
    }
}

fn invalid(field: &'static str, reason: &'static str) -> HostError {
    HostError::InvalidInput { field, reason }
}

/// Whether `name` is a host name: 1–63 lowercase letters, digits and dashes, not starting with
/// a dash (it is a subject token and a directory name).
pub fn valid_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Whether `key` reads as one SSH public key, `<type> <base64>` (no comment).
pub fn valid_host_key(key: &str) -> bool {
    let mut parts = key.split(' ');
    let (Some(kind), Some(body), None) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    (kind.starts_with("ssh-") || kind.starts_with("ecdsa-"))
        && kind.len() <= 64
        && kind
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.@".contains(&b))
        && (16..=4096).contains(&body.len())
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b))
}

impl HostSpec {
    /// Checks every field.
    pub fn validate(&self) -> Result<(), HostError> {
        let address_ok = (1..=253).contains(&self.address.len())
            && !self.address.starts_with('-')
            && self
                .address
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:".contains(&b));
        if !address_ok {
            return Err(invalid(
                "address",
                "must be a DNS name or an IP address (letters, digits, '.', '-', ':')",
            ));
        }
        if self.port == 0 {
            return Err(invalid("port", "must be 1 to 65535"));
        }
        let user_ok = (1..=32).contains(&self.user.len())
            && self
                .user
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
            && self
                .user
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-".contains(&b));
        if !user_ok {
            return Err(invalid(
                "user",
                "must be a POSIX user name (lowercase letters, digits, '_', '-')",
            ));
        }
        if !(1..=MAX_CAPACITY).contains(&self.capacity) {
            return Err(invalid("capacity", "must be 1 to 10000"));
        }
        if self.labels.len() > MAX_LABELS {
            return Err(invalid("labels", "at most 16 labels"));
        }
        if !self.labels.iter().all(|label| valid_name(label)) {
            return Err(invalid(
                "labels",
                "each must be 1 to 63 lowercase letters, digits and dashes",
            ));
        }
        if let Some(url) = &self.platform_url
            && (!is_http_url(url) || url.len() > 2048 || url.chars().any(char::is_whitespace))
        {
            return Err(invalid("platform_url", "must be an http(s) URL"));
        }
        Ok(())
    }
}

/// A host, folded from its events.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Host {
    /// Its name, once registered.
    pub name: Option<String>,
    /// What it is, once registered.
    pub spec: Option<HostSpec>,
    /// Its pinned SSH key.
    pub host_key: Option<String>,
    /// The agents placed on it.
    pub agents: BTreeSet<AgentId>,
    /// Whether it was last seen down.
    pub down: bool,
    /// Why, while it is down.
    pub down_reason: Option<String>,
    /// Whether an admin removed it.
    pub removed: bool,
}

impl Host {
    /// Decides what `command` changes; never mutates.
    pub fn decide(&self, command: &HostCommand) -> Result<Vec<HostEvent>, HostError> {
        use HostCommand as C;
        let Some(name) = self.name.clone() else {
            return match command {
                C::RegisterHost {
                    name,
                    spec,
                    host_key,
                } => {
                    if !valid_name(name) {
                        return Err(invalid(
                            "name",
                            "must be 1 to 63 lowercase letters, digits and dashes",
                        ));
                    }
                    spec.validate()?;
                    if host_key.as_deref().is_some_and(|key| !valid_host_key(key)) {
                        return Err(invalid(
                            "host_key",
                            "must be one SSH public key, '<type> <base64>'",
                        ));
                    }
                    let mut events = vec![HostEvent::HostRegistered {
                        name: name.clone(),
                        spec: spec.clone(),
                    }];
                    if let Some(host_key) = host_key {
                        events.push(HostEvent::HostKeyPinned {
                            name: name.clone(),
                            host_key: host_key.clone(),
                        });
                    }
                    Ok(events)
                }
                _ => Err(HostError::NotFound {
                    command: command.name(),
                }),
            };
        };
        if self.removed && !matches!(command, C::ReleaseAgent { .. }) {
            return Err(match command {
                C::RegisterHost { .. } => HostError::AlreadyExists { name },
                _ => HostError::NotFound {
                    command: command.name(),
                },
            });
        }
        let spec = self.spec.as_ref().expect("a registered host has a spec");
        Ok(match command {
            C::RegisterHost { .. } => return Err(HostError::AlreadyExists { name }),
            C::PinHostKey { host_key } => {
                if !valid_host_key(host_key) {
                    return Err(invalid(
                        "host_key",
                        "must be one SSH public key, '<type> <base64>'",
                    ));
                }
                match &self.host_key {
                    Some(pinned) if pinned == host_key => vec![],
                    Some(_) => return Err(HostError::HostKeyMismatch { name }),
                    None => vec![HostEvent::HostKeyPinned {
                        name,
                        host_key: host_key.clone(),
                    }],
                }
            }
            C::RepinHostKey {
                host_key: Some(host_key),
            } => {
                if !valid_host_key(host_key) {
                    return Err(invalid(
                        "host_key",
                        "must be one SSH public key, '<type> <base64>'",
                    ));
                }
                if self.host_key.as_ref() == Some(host_key) {
                    vec![]
                } else {
                    vec![HostEvent::HostKeyPinned {
                        name,
                        host_key: host_key.clone(),
                    }]
                }
            }
            C::RepinHostKey { host_key: None } if self.host_key.is_some() => {
                vec![HostEvent::HostKeyForgotten { name }]
            }
            C::RepinHostKey { host_key: None } => vec![],
            C::PlaceAgent { agent_id } => {
                if self.agents.contains(agent_id) {
                    vec![]
                } else if self.down {
                    return Err(HostError::HostDown { name });
                } else if self.agents.len() >= spec.capacity as usize {
                    return Err(HostError::HostFull {
                        name,
                        capacity: spec.capacity,
                    });
                } else {
                    vec![HostEvent::AgentPlaced {
                        name,
                        agent_id: *agent_id,
                    }]
                }
            }
            C::ReleaseAgent { agent_id } => {
                if self.agents.contains(agent_id) {
                    vec![HostEvent::AgentReleased {
                        name,
                        agent_id: *agent_id,
                    }]
                } else {
                    vec![]
                }
            }
            C::MarkHost { up: true, .. } if self.down => vec![HostEvent::HostUp { name }],
            // Down, or down for another reason than the one recorded (refused connections,
            // then a key that is not the pinned one).
            C::MarkHost { up: false, reason }
                if !self.down
                    || self.down_reason.as_deref() != Some(&crate::text::REASON.fit(reason)) =>
            {
                vec![HostEvent::HostDown {
                    name,
                    reason: crate::text::REASON.fit(reason),
                }]
            }
            C::MarkHost { .. } => vec![],
            C::RemoveHost if !self.agents.is_empty() => {
                return Err(HostError::HostInUse {
                    name,
                    agents: self.agents.len(),
                });
            }
            C::RemoveHost => vec![HostEvent::HostRemoved { name }],
        })
    }

    /// Folds one event in.
    pub fn apply(&mut self, event: &HostEvent) {
        match event {
            HostEvent::HostRegistered { name, spec } => {
                self.name = Some(name.clone());
                self.spec = Some(spec.clone());
            }
            HostEvent::HostKeyPinned { host_key, .. } => self.host_key = Some(host_key.clone()),
            HostEvent::HostKeyForgotten { .. } => self.host_key = None,
            HostEvent::AgentPlaced { agent_id, .. } => {
                self.agents.insert(*agent_id);
            }
            HostEvent::AgentReleased { agent_id, .. } => {
                self.agents.remove(agent_id);
            }
            HostEvent::HostDown { reason, .. } => {
                self.down = true;
                self.down_reason = Some(reason.clone());
            }
            HostEvent::HostUp { .. } => {
                self.down = false;
                self.down_reason = None;
            }
            HostEvent::HostRemoved { .. } => self.removed = true,
        }
    }

    /// Whether another agent may be placed here now.
    pub fn has_room(&self) -> bool {
        match &self.spec {
            Some(spec) => !self.removed && !self.down && self.agents.len() < spec.capacity as usize,
            None => false,
        }
    }
}

impl HostCommand {
    /// The command's name, for refusals.
    pub fn name(&self) -> &'static str {
        match self {
            HostCommand::RegisterHost { .. } => "register_host",
            HostCommand::PinHostKey { .. } => "pin_host_key",
            HostCommand::RepinHostKey { .. } => "repin_host_key",
            HostCommand::PlaceAgent { .. } => "place_agent",
            HostCommand::ReleaseAgent { .. } => "release_agent",
            HostCommand::MarkHost { .. } => "mark_host",
            HostCommand::RemoveHost => "remove_host",
        }
    }
}

impl_aggregate! {
    aggregate: Host,
    type: "host",
    command: HostCommand,
    event: HostEvent,
    error: HostError,
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";

    fn spec(capacity: u32) -> HostSpec {
        HostSpec {
            address: "10.0.0.5".into(),
            port: 22,
            user: "root".into(),
            capacity,
            labels: ["gpu".to_owned()].into(),
            platform_url: Some("http://10.0.0.1:8080".into()),
            engine: HostEngine::Ssh,
        }
    }

    fn registered(capacity: u32) -> Host {
        let mut host = Host::default();
        let register = HostCommand::RegisterHost {
            name: "vm-1".into(),
            spec: spec(capacity),
            host_key: None,
        };
        for event in host.decide(&register).expect("accepted") {
            host.apply(&event);
        }
        host
    }

    fn run(host: &mut Host, command: HostCommand) -> Result<Vec<HostEvent>, HostError> {
        let events = host.decide(&command)?;
        for event in &events {
            host.apply(event);
        }
        Ok(events)
    }

    #[test]
    fn placement_stops_at_capacity_and_repeats_are_free() {
        let mut host = registered(2);
        let (a, b, c) = (AgentId::new(), AgentId::new(), AgentId::new());
        assert_eq!(
            run(&mut host, HostCommand::PlaceAgent { agent_id: a })
                .expect("accepted")
                .len(),
            1
        );
        assert!(
            run(&mut host, HostCommand::PlaceAgent { agent_id: a })
                .expect("accepted")
                .is_empty()
        );
        run(&mut host, HostCommand::PlaceAgent { agent_id: b }).expect("accepted");
        let full = run(&mut host, HostCommand::PlaceAgent { agent_id: c }).expect_err("refused");
        assert_eq!(full.code(), "host_full");
        run(&mut host, HostCommand::ReleaseAgent { agent_id: a }).expect("accepted");
        run(&mut host, HostCommand::PlaceAgent { agent_id: c }).expect("accepted");
        assert_eq!(host.agents, [b, c].into());
    }

    #[test]
    fn a_pinned_key_refuses_another_one() {
        let mut host = registered(1);
        run(
            &mut host,
            HostCommand::PinHostKey {
                host_key: KEY.into(),
            },
        )
        .expect("accepted");
        assert!(
            run(
                &mut host,
                HostCommand::PinHostKey {
                    host_key: KEY.into()
                }
            )
            .expect("accepted")
            .is_empty()
        );
        let other = KEY.replace("IOMq", "IOMr");
        let err = run(
            &mut host,
            HostCommand::PinHostKey {
                host_key: other.clone(),
            },
        )
        .expect_err("refused");
        assert_eq!(err.code(), "host_key_mismatch");

        // An admin re-pins: another key, or none (the next contact pins what it sees).
        let repin = |host_key: Option<&str>| HostCommand::RepinHostKey {
            host_key: host_key.map(str::to_owned),
        };
        assert_eq!(
            run(&mut host, repin(Some(&other))).expect("accepted").len(),
            1
        );
        assert_eq!(host.host_key.as_deref(), Some(other.as_str()));
        assert!(
            run(&mut host, repin(Some(&other)))
                .expect("accepted")
                .is_empty()
        );
        let err = run(&mut host, repin(Some("not a key"))).expect_err("refused");
        assert_eq!(err.code(), "invalid_input");
        assert_eq!(run(&mut host, repin(None)).expect("accepted").len(), 1);
        assert_eq!(host.host_key, None);
        assert!(run(&mut host, repin(None)).expect("accepted").is_empty());
        run(
            &mut host,
            HostCommand::PinHostKey {
                host_key: KEY.into(),
            },
        )
        .expect("pinned again");
    }

    #[test]
    fn a_down_host_takes_no_new_agent_and_a_busy_one_is_not_removed() {
        let mut host = registered(3);
        let a = AgentId::new();
        run(&mut host, HostCommand::PlaceAgent { agent_id: a }).expect("accepted");
        run(
            &mut host,
            HostCommand::MarkHost {
                up: false,
                reason: "no answer".into(),
            },
        )
        .expect("accepted");
        let err = run(
            &mut host,
            HostCommand::PlaceAgent {
                agent_id: AgentId::new(),
            },
        )
        .expect_err("refused");
        assert_eq!(err.code(), "host_down");
        assert_eq!(
            run(&mut host, HostCommand::RemoveHost)
                .expect_err("refused")
                .code(),
            "host_in_use"
        );
        run(&mut host, HostCommand::ReleaseAgent { agent_id: a }).expect("accepted");
        run(&mut host, HostCommand::RemoveHost).expect("accepted");
        assert_eq!(
            run(&mut host, HostCommand::PlaceAgent { agent_id: a })
                .expect_err("refused")
                .code(),
            "not_found"
        );
    }

    #[test]
    fn registration_checks_every_field() {
        let bad = |spec: HostSpec, name: &str| {
            Host::default()
                .decide(&HostCommand::RegisterHost {
                    name: name.into(),
                    spec,
                    host_key: None,
                })
                .expect_err("refused")
        };
        let field = |err: HostError| match err {
            HostError::InvalidInput { field, .. } => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field(bad(spec(1), "VM 1")), "name");
        assert_eq!(
            field(bad(
                HostSpec {
                    address: "a b".into(),
                    ..spec(1)
                },
                "vm"
            )),
            "address"
        );
        assert_eq!(
            field(bad(
                HostSpec {
                    user: "Root".into(),
                    ..spec(1)
                },
                "vm"
            )),
            "user"
        );
        assert_eq!(field(bad(spec(0), "vm")), "capacity");
        assert_eq!(field(bad(HostSpec { port: 0, ..spec(1) }, "vm")), "port");
        assert_eq!(
            field(bad(
                HostSpec {
                    platform_url: Some("ftp://x".into()),
                    ..spec(1)
                },
                "vm"
            )),
            "platform_url"
        );
        let with_key = Host::default().decide(&HostCommand::RegisterHost {
            name: "vm".into(),
            spec: spec(1),
            host_key: Some("not a key at all".into()),
        });
        assert_eq!(field(with_key.expect_err("refused")), "host_key");
    }

    #[test]
    fn a_host_registered_before_engines_is_an_ssh_host_and_ssh_hosts_record_no_engine() {
        let old = r#"{"address":"10.0.0.5","port":22,"user":"root","capacity":2,"labels":[],"platform_url":null}"#;
        let spec: HostSpec = serde_json::from_str(old).expect("an old spec reads");
        assert_eq!(spec.engine, HostEngine::Ssh);
        assert_eq!(serde_json::to_string(&spec).expect("json"), old);
        let docker = HostSpec {
            engine: HostEngine::Docker,
            ..spec
        };
        let json = serde_json::to_string(&docker).expect("json");
        assert!(json.ends_with(r#""engine":"docker"}"#), "{json}");
        assert_eq!(
            serde_json::from_str::<HostSpec>(&json).expect("reads back"),
            docker
        );
    }
}
