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
        // The relay of a remote engine's network (a docker host's), which holds host ports.
        let _ = Command::new("docker")
            .args(["rm", "-f", &format!("warren-relay-{}", self.name)])
            .output();
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
        // The egress chain of a network with internet (WARREN_SANDBOX_INTERNET).
        let egress = warren_workers::deployer::docker::network::egress_chain_name(&self.name);
        while Command::new("iptables")
            .args(["-w", "5", "-D", "DOCKER-USER", "-i", &bridge, "-j", &egress])
            .output()
            .is_ok_and(|out| out.status.success())
        {}
        let _ = Command::new("iptables")
            .args(["-w", "5", "-F", &egress])
            .output();
        let _ = Command::new("iptables")
            .args(["-w", "5", "-X", &egress])
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

/// A stand-in for the internet on this offline host, in a network namespace of the test's own
/// behind a veth pair: a TCP listener on a public address (in TEST-NET-3, 203.0.113.0/24,
/// which no real host has) and on a private one (192.168.x.y), each reached through the host's
/// routing table as a real one would be. Each connection is greeted with [`Self::token`].
/// Dropped, the namespace (and with it the veth pair and the route) and the listener go.
pub struct FakeInternet {
    ns: String,
    listener: std::process::Child,
    /// The public address.
    pub public: String,
    /// The private address.
    pub private: String,
    /// The listener's port (on both addresses).
    pub port: u16,
    /// What the listener says.
    pub token: String,
}

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .output()
        .is_ok_and(|out| out.status.success())
}

impl FakeInternet {
    pub fn start() -> Self {
        // Tests run side by side: another /30 when one is taken.
        for _ in 0..8 {
            if let Some(internet) = Self::try_start() {
                return internet;
            }
        }
        panic!("could not set up a network namespace (root and iproute2 are needed)");
    }

    fn try_start() -> Option<Self> {
        let id = uuid::Uuid::new_v4();
        let bytes = id.as_bytes();
        let tag = &id.simple().to_string()[..6];
        let ns = format!("wti-{tag}");
        let (host_if, ns_if) = (format!("wti-{tag}h"), format!("wti-{tag}n"));
        let quad = u32::from(bytes[0] % 63) * 4;
        let host_ip = format!("203.0.113.{}", quad + 1);
        let public = format!("203.0.113.{}", quad + 2);
        let private = format!("192.168.{}.{}", 200 + bytes[1] % 50, 2 + bytes[2] % 250);
        if !ip(&["netns", "add", &ns]) {
            return None;
        }
        let cleanup = |ns: &str| {
            let _ = ip(&["netns", "del", ns]);
        };
        let ok = ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
        ]) && ip(&["link", "set", &ns_if, "netns", &ns])
            && ip(&["addr", "add", &format!("{host_ip}/30"), "dev", &host_if])
            && ip(&["link", "set", &host_if, "up"])
            && ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{public}/30"),
                "dev",
                &ns_if,
            ])
            && ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{private}/32"),
                "dev",
                &ns_if,
            ])
            && ip(&["-n", &ns, "link", "set", &ns_if, "up"])
            && ip(&["-n", &ns, "link", "set", "lo", "up"])
            && ip(&["route", "add", &format!("{private}/32"), "dev", &host_if]);
        if !ok {
            let _ = ip(&["link", "del", &host_if]);
            cleanup(&ns);
            return None;
        }
        let token = format!("HELLO-{}", uuid::Uuid::new_v4().simple());
        let python = if std::path::Path::new("/usr/bin/python3").exists() {
            "/usr/bin/python3"
        } else {
            "python3"
        };
        let script = format!(
            "import socket, threading\n\
             s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
             s.bind(('0.0.0.0', 0)); s.listen(16)\n\
             print(s.getsockname()[1], flush=True)\n\
             while True:\n    c, _ = s.accept(); c.sendall(b'{token}\\n'); c.close()\n"
        );
        let mut listener = Command::new("ip")
            .args(["netns", "exec", &ns, python, "-c", &script])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start the listener");
        let mut line = String::new();
        use std::io::BufRead;
        let read =
            std::io::BufReader::new(listener.stdout.take().expect("stdout")).read_line(&mut line);
        let Some(port) = read.ok().and_then(|_| line.trim().parse().ok()) else {
            let _ = listener.kill();
            let _ = listener.wait();
            cleanup(&ns);
            return None;
        };
        Some(Self {
            ns,
            listener,
            public,
            private,
            port,
            token,
        })
    }
}

impl Drop for FakeInternet {
    fn drop(&mut self) {
        let _ = self.listener.kill();
        let _ = self.listener.wait();
        // The veth pair and the route through it go with the namespace.
        let _ = ip(&["netns", "del", &self.ns]);
    }
}
