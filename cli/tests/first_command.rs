//! The README's first command, as a newcomer runs it: `warren dev` in a fresh empty directory,
//! with nothing configured but a free HTTP port, serves `/api/v1/health`, and on SIGTERM stops
//! with every server it started. Once from a plain directory, once as root under a parent only
//! root may enter (a clone in `/root`, a `mktemp -d`), where PostgreSQL — which refuses to run
//! as root — cannot reach the data dir.

mod common;

use common::{free_port, get_json};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use warren_testkit::wait_until;

/// The pids of `pid`'s children (from /proc).
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// The program name of a running process, if it still runs (zombies count as gone).
fn running(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (name, rest) = stat.split_once(") ")?;
    let state = rest.split_whitespace().next()?;
    (state != "Z" && state != "X").then(|| name.rsplit_once('(').map_or("", |n| n.1).to_owned())
}

async fn first_command(cwd: &Path) {
    let http = free_port();
    let log = cwd.join("warren.log");
    let file = std::fs::File::create(&log).expect("log");
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_warren"));
    command
        .arg("dev")
        .current_dir(cwd)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", std::env::var_os("HOME").unwrap_or_default())
        .env("WARREN_HTTP_ADDR", format!("127.0.0.1:{http}"))
        // Docker sandboxes have tests of their own (sandbox.rs, dev_script.rs).
        .env("WARREN_SANDBOX", "process")
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("log"))
        .stderr(file)
        .kill_on_drop(true);
    let mut warren = command.spawn().expect("spawn warren dev");
    let pid = warren.id().expect("pid");
    let health = format!("http://127.0.0.1:{http}/api/v1/health");
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    let healthy = tokio::time::timeout(Duration::from_secs(60), async {
        while !matches!(get_json(&health).await, Some((200, _))) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(healthy.is_ok(), "never healthy; log:\n{}", log_text());
    assert!(cwd.join(".warren/nats").is_dir(), "the default data dir");

    let servers: Vec<(u32, String)> = children(pid)
        .into_iter()
        .filter_map(|child| running(child).map(|name| (child, name)))
        .collect();
    let names: Vec<&str> = servers.iter().map(|(_, name)| name.as_str()).collect();
    assert!(
        names.contains(&"nats-server") && names.contains(&"postgres"),
        "children: {names:?}"
    );

    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid as i32).expect("pid"),
        rustix::process::Signal::TERM,
    )
    .expect("SIGTERM");
    let exited = tokio::time::timeout(Duration::from_secs(30), warren.wait()).await;
    assert!(
        matches!(exited, Ok(Ok(status)) if status.success()),
        "did not exit cleanly: {exited:?}; log:\n{}",
        log_text()
    );
    wait_until(Duration::from_secs(10), || async {
        servers.iter().all(|(child, _)| running(*child).is_none())
    })
    .await;
}

#[tokio::test]
async fn warren_dev_in_an_empty_directory_serves_health_and_stops_with_its_servers() {
    let dir = tempfile::tempdir().expect("tempdir");
    first_command(dir.path()).await;
}

#[tokio::test]
async fn warren_dev_as_root_under_a_parent_only_root_may_enter_still_starts() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: this case is about running as root");
        return;
    }
    let parent = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(parent.path(), std::fs::Permissions::from_mode(0o700))
        .expect("chmod 0700");
    let cwd = parent.path().join("clone");
    std::fs::create_dir(&cwd).expect("mkdir");
    first_command(&cwd).await;
    // The cluster went where the `postgres` user can reach it; the data dir points there.
    let relocated = std::fs::read_link(cwd.join(".warren/pg")).expect("a symlink to the cluster");
    assert!(
        relocated.starts_with(warren_deploy::postgres::RELOCATED_ROOT),
        "{}",
        relocated.display()
    );
    std::fs::remove_dir_all(&relocated).expect("clean up the cluster");
}
