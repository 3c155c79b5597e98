//! The sandbox's out-of-memory kills, as the kernel counts them for the runtime's own cgroup.
//!
//! Inside a container the runtime sees its cgroup at `/sys/fs/cgroup`: cgroup v1's
//! `memory/memory.oom_control` and cgroup v2's `memory.events` both carry an `oom_kill` line,
//! the number of processes the kernel killed for the cgroup's memory limit. The kernel raises it
//! before it sends the kill, so once a killed tool process has been reaped the counter already
//! says so: a run compares it before and after each tool call (docs/adr/0026-sandbox-alerts.md).
//! Outside a sandbox the file describes the host's cgroup, so the watch is opt-in
//! (`WARREN_AGENT_WATCH_OOM`, set by the docker provisioner).

use std::path::{Path, PathBuf};

/// Where the counter is, first match wins: cgroup v1, then v2.
const COUNTER_FILES: [&str; 2] = [
    "/sys/fs/cgroup/memory/memory.oom_control",
    "/sys/fs/cgroup/memory.events",
];

/// Reads the cgroup's `oom_kill` counter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OomCounter {
    file: PathBuf,
}

impl OomCounter {
    /// The counter of the cgroup the runtime runs in, if the system keeps one.
    pub fn own_cgroup() -> Option<Self> {
        COUNTER_FILES
            .iter()
            .map(Path::new)
            .find(|file| read_kills(file).is_some())
            .map(|file| Self { file: file.into() })
    }

    /// The counter in `file` (a `memory.oom_control` or `memory.events`).
    pub fn at(file: impl Into<PathBuf>) -> Self {
        Self { file: file.into() }
    }

    /// Processes killed for memory so far; 0 if the file cannot be read.
    pub async fn kills(&self) -> u64 {
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || read_kills(&file))
            .await
            .ok()
            .flatten()
            .unwrap_or(0)
    }
}

fn read_kills(file: &Path) -> Option<u64> {
    parse_kills(&std::fs::read_to_string(file).ok()?)
}

/// The `oom_kill N` line's `N`.
fn parse_kills(text: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (key, value) = line.split_once(' ')?;
        (key == "oom_kill").then(|| value.trim().parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_cgroup_versions_name_the_kills() {
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        let v2 = "low 0\nhigh 0\nmax 12\noom 2\noom_kill 2\noom_group_kill 0\n";
        assert_eq!(parse_kills(v1), Some(3));
        assert_eq!(parse_kills(v2), Some(2));
        assert_eq!(parse_kills("oom_kill_disable 0\n"), None);
    }

    #[tokio::test]
    async fn a_counter_that_cannot_be_read_counts_nothing() {
        assert_eq!(
            OomCounter::at("/nonexistent/memory.events").kills().await,
            0
        );
    }
}
