//! The NATS configs shipped in `deploy/nats/` are valid for the nats-server we run (`-t` parses
//! and checks a config without starting the server).

use std::path::Path;
use std::process::Command;

fn assert_valid(relative: &str) {
    let binary = warren_deploy::nats::nats_server_binary(None).expect("nats-server binary");
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    let output = Command::new(&binary)
        .arg("-t")
        .arg("-c")
        .arg(&config)
        .output()
        .expect("run nats-server -t");
    assert!(
        output.status.success(),
        "{} is invalid:\n{}{}",
        config.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_single_node_config_is_valid() {
    assert_valid("nats/warren.conf");
}

#[test]
fn the_three_cluster_node_configs_are_valid() {
    for node in 1..=3 {
        assert_valid(&format!("nats/cluster/node-{node}.conf"));
    }
}
