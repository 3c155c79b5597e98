//! The NATS configs shipped in `deploy/nats/` are valid for the nats-server we run (`-t` parses
//! and checks a config without starting the server), once `warren nats-auth` has written the
//! authorization files they include; without those files they do not start at all.

use std::path::Path;
use std::process::{Command, Output};

/// Copies `deploy/nats/<relative>`'s directory into a temporary one.
fn copy_of(relative_dir: &str) -> tempfile::TempDir {
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative_dir);
    let to = tempfile::tempdir().expect("tempdir");
    for entry in std::fs::read_dir(&from).expect("read dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|ext| ext == "conf") {
            std::fs::copy(&path, to.path().join(path.file_name().expect("name"))).expect("copy");
        }
    }
    to
}

fn check(config: &Path) -> Output {
    let binary = warren_deploy::nats::nats_server_binary(None).expect("nats-server binary");
    Command::new(&binary)
        .arg("-t")
        .arg("-c")
        .arg(config)
        .output()
        .expect("run nats-server -t")
}

fn assert_valid(config: &Path) {
    let output = check(config);
    assert!(
        output.status.success(),
        "{} is invalid:\n{}{}",
        config.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

const ROUTES: [&str; 3] = ["warren-nats-1", "warren-nats-2", "warren-nats-3"];

#[test]
fn the_single_node_config_is_valid_with_its_authorization_and_refused_without() {
    let dir = copy_of("nats");
    assert!(
        !check(&dir.path().join("warren.conf")).status.success(),
        "a config that would run without authorization"
    );
    warren_deploy::nats_auth::write_server_files(dir.path(), &[]).expect("auth files");
    assert_valid(&dir.path().join("warren.conf"));
    let auth = std::fs::read_to_string(dir.path().join("auth.conf")).expect("auth.conf");
    assert_eq!(auth.matches("nkey:").count(), 7, "{auth}");
}

#[test]
fn the_three_cluster_node_configs_are_valid_with_their_authorization() {
    let dir = copy_of("nats/cluster");
    warren_deploy::nats_auth::write_server_files(dir.path(), &ROUTES).expect("auth files");
    for node in 1..=3 {
        assert_valid(&dir.path().join(format!("node-{node}.conf")));
    }
    let cluster = std::fs::read_to_string(dir.path().join("cluster-auth.conf")).expect("file");
    assert!(cluster.contains("nats-route://route:"), "{cluster}");
}
