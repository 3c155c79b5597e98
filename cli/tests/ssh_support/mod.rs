//! "VM" hosts for the `ssh` provisioner's tests: containers running `sshd` on a private Docker
//! network of the test's own, from an image built here from a `debootstrap --variant=minbase`
//! root with `openssh-server` (cached under WARREN_IMAGE_CACHE_DIR, else ~/.cache/warren).
//! Each container makes its own host keys at first start (so a new container at the same address
//! presents another key) and trusts the test's key for root.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use tokio::sync::OnceCell;

/// The image of the test hosts.
pub const IMAGE: &str = "warren-test-sshd:3";
/// Debian packages beyond minbase (iptables: a docker host's firewall).
const PACKAGES: &str = "openssh-server,ca-certificates,procps,iproute2,iptables";

static IMAGE_BUILT: OnceCell<()> = OnceCell::const_new();

/// `docker args…`, its standard output; panics when it fails.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().expect("docker");
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Runs `script` with `sh -c` as root in container `name`; its standard output, whatever the
/// exit status.
pub fn exec(name: &str, script: &str) -> String {
    let out = Command::new("docker")
        .args(["exec", name, "sh", "-c", script])
        .output()
        .expect("docker exec");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn cache_dir() -> PathBuf {
    std::env::var_os("WARREN_IMAGE_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
                .join(".cache/warren")
        })
}

const INIT: &str = r#"#!/bin/sh
set -e
mkdir -p /run/sshd /root/.ssh
chmod 700 /root/.ssh
printf '%s\n' "$AUTHORIZED_KEY" > /root/.ssh/authorized_keys
chmod 600 /root/.ssh/authorized_keys
ls /etc/ssh/ssh_host_*_key >/dev/null 2>&1 || ssh-keygen -A
exec /usr/sbin/sshd -D -e -o PermitRootLogin=prohibit-password -o PasswordAuthentication=no ${SSHD_ARGS}
"#;

/// Builds [`IMAGE`] unless it exists.
pub async fn ensure_image() {
    IMAGE_BUILT
        .get_or_init(|| async {
            tokio::task::spawn_blocking(build_image)
                .await
                .expect("building the sshd image");
        })
        .await;
}

fn build_image() {
    // Test processes build it one at a time (each test is a process of its own).
    std::fs::create_dir_all(cache_dir()).expect("cache dir");
    let lock = std::fs::File::create(cache_dir().join("sshd-image.lock")).expect("lock file");
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).expect("flock");
    let exists = Command::new("docker")
        .args(["image", "inspect", IMAGE])
        .output()
        .is_ok_and(|out| out.status.success());
    if exists {
        return;
    }
    let root = cache_dir().join(format!("sshd-rootfs-{}", PACKAGES.replace(',', "-")));
    let tree = root.join("root");
    if !root.join("complete").is_file() {
        let partial = root.join("root.partial");
        let _ = std::fs::remove_dir_all(&partial);
        std::fs::create_dir_all(&root).expect("cache dir");
        let mirror = std::env::var("WARREN_IMAGE_MIRROR")
            .unwrap_or_else(|_| "http://deb.debian.org/debian".into());
        let out = Command::new("debootstrap")
            .args([
                "--variant=minbase",
                &format!("--include={PACKAGES}"),
                "bookworm",
            ])
            .arg(&partial)
            .arg(&mirror)
            .output()
            .expect("run debootstrap (install it: apt-get install debootstrap)");
        assert!(
            out.status.success(),
            "debootstrap failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Each container makes host keys of its own at its first start.
        for entry in std::fs::read_dir(partial.join("etc/ssh")).expect("etc/ssh") {
            let path = entry.expect("entry").path();
            if path
                .file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with("ssh_host_"))
            {
                std::fs::remove_file(path).expect("remove a host key");
            }
        }
        for trimmed in [
            "var/cache/apt",
            "var/lib/apt/lists",
            "usr/share/doc",
            "usr/share/man",
        ] {
            let _ = std::fs::remove_dir_all(partial.join(trimmed));
        }
        let _ = std::fs::remove_dir_all(&tree);
        std::fs::rename(&partial, &tree).expect("rename the root");
        std::fs::write(root.join("complete"), b"").expect("mark complete");
    }
    let init = tree.join("usr/local/sbin/vm-init");
    std::fs::create_dir_all(init.parent().expect("parent")).expect("sbin");
    std::fs::write(&init, INIT).expect("write vm-init");
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "chmod 755 {init} && tar -C {tree} -c . | docker import --change 'CMD [\"/usr/local/sbin/vm-init\"]' - {IMAGE}",
            init = init.display(),
            tree = tree.display()
        ))
        .output()
        .expect("docker import");
    assert!(
        out.status.success(),
        "docker import failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A key pair for the hosts' root: `(private key, public key line)`.
pub fn key_pair(dir: &Path) -> (String, String) {
    let path = dir.join("host-login");
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "warren-test", "-f"])
        .arg(&path)
        .output()
        .expect("ssh-keygen");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        std::fs::read_to_string(&path).expect("private key"),
        std::fs::read_to_string(path.with_extension("pub"))
            .expect("public key")
            .trim()
            .to_owned(),
    )
}

/// A private Docker network with "VM" containers on it; removed with them when dropped.
pub struct Lab {
    pub network: String,
    /// `10.x.y`: the hosts are `.10`, `.11`, …; the gateway (this machine) is `.1`.
    pub prefix: String,
    authorized_key: String,
    vms: std::sync::Mutex<Vec<String>>,
}

impl Lab {
    /// A network of its own (a random /24 in 10.251.0.0 to 10.254.255.0), its hosts trusting
    /// `authorized_key`.
    pub fn new(authorized_key: &str) -> Self {
        let id = uuid::Uuid::new_v4();
        let bytes = id.as_bytes();
        let prefix = format!("10.{}.{}", 251 + bytes[0] % 4, bytes[1]);
        let network = format!("warren-ssh-{}", &id.simple().to_string()[..10]);
        docker(&[
            "network",
            "create",
            "--subnet",
            &format!("{prefix}.0/24"),
            "--gateway",
            &format!("{prefix}.1"),
            &network,
        ]);
        Self {
            network,
            prefix,
            authorized_key: authorized_key.to_owned(),
            vms: Default::default(),
        }
    }

    /// This machine's address on the network.
    pub fn gateway(&self) -> String {
        format!("{}.1", self.prefix)
    }

    /// Starts host `index` (address `.10 + index`) as container `<network>-vm<index>`; its
    /// name and address. A container of that name is replaced.
    pub fn start_vm(&self, index: u8) -> (String, String) {
        let name = format!("{}-vm{index}", self.network);
        let address = format!("{}.{}", self.prefix, 10 + index);
        let _ = Command::new("docker").args(["rm", "-f", &name]).output();
        docker(&[
            "run",
            "-d",
            "--name",
            &name,
            "--hostname",
            &format!("vm{index}"),
            "--network",
            &self.network,
            "--ip",
            &address,
            "-e",
            &format!("AUTHORIZED_KEY={}", self.authorized_key),
            IMAGE,
        ]);
        self.vms.lock().expect("vms").push(name.clone());
        (name, address)
    }

    /// Starts a "docker host": an sshd container in this machine's network namespace, on
    /// loopback port `port`, with this machine's Docker engine socket and the right to change
    /// the firewall. The deployer reaches it as it would a remote machine whose engine it
    /// drives (this machine's engine is the only one a test can run: privileged containers,
    /// and so an engine inside one, are refused here). Its name; its address is 127.0.0.1.
    pub fn start_docker_host(&self, port: u16) -> String {
        let name = format!("{}-engine", self.network);
        let _ = Command::new("docker").args(["rm", "-f", &name]).output();
        docker(&[
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            "host",
            "--cap-add",
            "NET_ADMIN",
            "-v",
            "/var/run/docker.sock:/var/run/docker.sock",
            "-e",
            &format!("AUTHORIZED_KEY={}", self.authorized_key),
            "-e",
            &format!("SSHD_ARGS=-p {port} -o ListenAddress=127.0.0.1"),
            IMAGE,
        ]);
        self.vms.lock().expect("vms").push(name.clone());
        name
    }

    /// The host key container `name` presents (`<type> <base64>` of its Ed25519 key), once
    /// it has made it.
    pub async fn host_key(&self, name: &str) -> String {
        warren_testkit::wait_for(std::time::Duration::from_secs(30), || async {
            let key = exec(name, "cat /etc/ssh/ssh_host_ed25519_key.pub 2>/dev/null");
            let mut parts = key.split_whitespace();
            match (parts.next(), parts.next()) {
                (Some(kind), Some(body)) if sshd_up(name) => Some(format!("{kind} {body}")),
                _ => None,
            }
        })
        .await
    }
}

/// Whether sshd in container `name` listens.
fn sshd_up(name: &str) -> bool {
    exec(name, "cat /proc/net/tcp /proc/net/tcp6 2>/dev/null").contains(":0016 00000000:0000 0A")
        || exec(name, "cat /proc/net/tcp6 2>/dev/null")
            .contains(":0016 00000000000000000000000000000000:0000 0A")
}

impl Drop for Lab {
    fn drop(&mut self) {
        for vm in self.vms.lock().expect("vms").iter() {
            let _ = Command::new("docker").args(["rm", "-f", vm]).output();
        }
        let _ = Command::new("docker")
            .args(["network", "rm", &self.network])
            .output();
    }
}
