//! Docker sandboxes under test: the agent image (built once per machine, as `warren image
//! build` does), a sandbox network of the test's own (its own name, bridge, firewall chain and
//! relay port, so tests run side by side), and the clean-up of everything the test made.

#![allow(dead_code)]

use std::process::Command;
use tokio::sync::OnceCell;

/// The image tests run: built from the workspace's `warren-agent`.
pub const IMAGE: &str = "warren-agent:test";

pub use crate::common::agent_bin;

static IMAGE_BUILT: OnceCell<()> = OnceCell::const_new();

/// Builds [`IMAGE`] with `warren image build` unless it holds this `warren-agent` already (the
/// root filesystem is cached under WARREN_IMAGE_CACHE_DIR, else ~/.cache/warren).
pub async fn ensure_image() {
    IMAGE_BUILT
        .get_or_init(|| async {
            let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_warren"))
                .args(["image", "build"])
                .env("WARREN_AGENT_IMAGE", IMAGE)
                .env("WARREN_AGENT_BIN", agent_bin())
                .env("WARREN_CONFIG", "/nonexistent/warren.toml")
                .output()
                .await
                .expect("run warren image build");
            assert!(
                out.status.success(),
                "warren image build failed (Docker and debootstrap are needed):\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        })
        .await;
}

/// One test's sandbox network; removes its containers, volumes, network and firewall chain
/// when dropped.
pub struct SandboxNet {
    pub name: String,
    pub subnet: String,
    pub relay_port: u16,
}

impl SandboxNet {
    pub fn new(relay_port: u16) -> Self {
        let id = uuid::Uuid::new_v4();
        let bytes = id.as_bytes();
        Self {
            name: format!("warren-t-{}", &id.simple().to_string()[..10]),
            // A /24 of its own among 10.214.0.0 to 10.250.255.0.
            subnet: format!("10.{}.{}.0/24", 214 + bytes[0] % 37, bytes[1]),
            relay_port,
        }
    }

    /// The deployer's environment for this network.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("WARREN_SANDBOX", "docker".to_owned()),
            ("WARREN_AGENT_IMAGE", IMAGE.to_owned()),
            ("WARREN_SANDBOX_NETWORK", self.name.clone()),
            ("WARREN_SANDBOX_SUBNET", self.subnet.clone()),
            ("WARREN_SANDBOX_RELAY_PORT", self.relay_port.to_string()),
        ]
    }
}

impl Drop for SandboxNet {
    fn drop(&mut self) {
        let label = format!("label=org.warren.network={}", self.name);
        for (kind, list) in [
            ("container", vec!["ps", "-aq", "--filter", &label]),
            ("volume", vec!["volume", "ls", "-q", "--filter", &label]),
        ] {
            let Ok(out) = Command::new("docker").args(&list).output() else {
                continue;
            };
            let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(str::to_owned)
                .collect();
            if ids.is_empty() {
                continue;
            }
            let remove: Vec<&str> = match kind {
                "container" => vec!["rm", "-f"],
                _ => vec!["volume", "rm", "-f"],
            };
            let _ = Command::new("docker").args(&remove).args(&ids).output();
        }
        let _ = Command::new("docker")
            .args(["network", "rm", &self.name])
            .output();
        let chain = warren_workers::deployer::docker::network::chain_name(&self.name);
        let bridge = warren_workers::deployer::docker::network::bridge_name(&self.name);
        let _ = Command::new("iptables")
            .args(["-w", "5", "-D", "INPUT", "-i", &bridge, "-j", &chain])
            .output();
        let _ = Command::new("iptables")
            .args(["-w", "5", "-F", &chain])
            .output();
        let _ = Command::new("iptables")
            .args(["-w", "5", "-X", &chain])
            .output();
    }
}

/// `docker inspect` of a container, if it exists.
pub fn inspect(name: &str) -> Option<serde_json::Value> {
    let out = Command::new("docker")
        .args(["inspect", name])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let mut list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).ok()?;
    list.pop()
}

/// Whether a volume exists.
pub fn volume_exists(name: &str) -> bool {
    Command::new("docker")
        .args(["volume", "inspect", name])
        .output()
        .is_ok_and(|out| out.status.success())
}

/// `docker <args>`, which must succeed.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().expect("docker");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The agent's container's name.
pub fn container(agent: impl std::fmt::Display) -> String {
    format!("warren-agent-{agent}")
}

/// The agent's volume's name.
pub fn volume(agent: impl std::fmt::Display) -> String {
    format!("warren-ws-{agent}")
}
