//! What runtimes use, for `GET /agents/{id}/status` (docs/adr/0024): the `process`
//! provisioner's figures from `/proc` (a runtime is a process group: the agent and every tool it
//! started), a workspace's size on disk, and [`CpuMeter`], which turns two samples of a CPU
//! counter into a percentage.

use super::provisioner::Usage;
use chrono::{DateTime, Utc};
use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;
use warren_domain::ids::AgentId;

/// `USER_HZ`, the unit of `/proc`'s CPU and start times: Linux fixes it at 100 on every
/// architecture Warren runs on.
const USER_HZ: u64 = 100;
/// A workspace with more entries than this is not measured: walking it at every pass would
/// cost more than the figure is worth.
const MAX_DISK_ENTRIES: usize = 100_000;

/// One process group's use: its live members' CPU time (with the children they reaped) and
/// resident memory, and when its leader started.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct GroupUsage {
    /// CPU time, nanoseconds.
    pub cpu_ns: u64,
    /// Resident memory, bytes.
    pub memory_bytes: u64,
    /// When the leader (the process whose pid is the group's id) started.
    pub started_at: Option<DateTime<Utc>>,
}

impl From<GroupUsage> for Usage {
    fn from(group: GroupUsage) -> Self {
        Usage {
            started_at: group.started_at,
            cpu_ns: Some(group.cpu_ns),
            memory_bytes: Some(group.memory_bytes),
            disk_bytes: None,
        }
    }
}

/// The fields of `/proc/<pid>/stat` used here.
#[derive(Debug, PartialEq)]
struct Stat {
    pgrp: i32,
    /// utime + stime + cutime + cstime, in `USER_HZ` ticks.
    cpu_ticks: u64,
    /// Start time after boot, in ticks.
    start_ticks: u64,
}

/// Parses `/proc/<pid>/stat`. The command name (field 2) may hold spaces and parentheses, so
/// the fields are counted from its last `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let fields: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
    // `fields[0]` is field 3 (state).
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    let cpu_ticks = [14, 15, 16, 17]
        .into_iter()
        .map(field)
        .sum::<Option<u64>>()?;
    Some(Stat {
        pgrp: fields.get(5 - 3)?.parse().ok()?,
        cpu_ticks,
        start_ticks: field(22)?,
    })
}

/// `VmRSS` of `/proc/<pid>/status`, in bytes.
fn resident_bytes(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// When the machine booted (`btime` of `/proc/stat`).
fn boot_time() -> Option<DateTime<Utc>> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let secs = stat
        .lines()
        .find_map(|line| line.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    DateTime::from_timestamp(secs, 0)
}

/// The use of each of `groups` (process group ids), from one read of `/proc`. A group with no
/// live member is left out.
pub fn process_groups(groups: &HashSet<i32>) -> HashMap<i32, GroupUsage> {
    let mut found: HashMap<i32, GroupUsage> = HashMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    let booted = boot_time();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let Some(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|text| parse_stat(&text))
        else {
            continue;
        };
        if !groups.contains(&stat.pgrp) {
            continue;
        }
        let group = found.entry(stat.pgrp).or_default();
        group.cpu_ns += stat.cpu_ticks * (1_000_000_000 / USER_HZ);
        group.memory_bytes += resident_bytes(pid).unwrap_or(0);
        if pid.parse::<i32>().ok() == Some(stat.pgrp) {
            group.started_at = booted.and_then(|booted| {
                let millis = i64::try_from(stat.start_ticks * (1000 / USER_HZ)).ok()?;
                Some(booted + chrono::Duration::milliseconds(millis))
            });
        }
    }
    found
}

/// The size on disk of everything under `root` (symbolic links are not followed); `None` if
/// `root` cannot be read or holds more than [`MAX_DISK_ENTRIES`] entries.
pub fn disk_bytes(root: &Path) -> Option<u64> {
    let mut total = 0u64;
    let mut entries = 0usize;
    let mut dirs = vec![root.to_owned()];
    while let Some(dir) = dirs.pop() {
        let listing = match std::fs::read_dir(&dir) {
            Ok(listing) => listing,
            Err(_) if dir != root => continue,
            Err(_) => return None,
        };
        for entry in listing.flatten() {
            entries += 1;
            if entries > MAX_DISK_ENTRIES {
                return None;
            }
            let Ok(meta) = entry.metadata() else { continue };
            total += meta.blocks() * 512;
            if meta.is_dir() {
                dirs.push(entry.path());
            }
        }
    }
    Some(total)
}

/// Turns each runtime's CPU counter into a percentage of one core over the time since its
/// previous sample (none for a first sample, or when the runtime restarted in between).
#[derive(Default)]
pub struct CpuMeter {
    last: Mutex<HashMap<AgentId, Sample>>,
}

#[derive(Clone, Copy)]
struct Sample {
    started_at: Option<DateTime<Utc>>,
    cpu_ns: u64,
    at: Instant,
}

impl CpuMeter {
    /// Records `usage` sampled `at`; the percentage since the previous sample of the same run.
    pub fn percent(&self, agent_id: AgentId, usage: &Usage, at: Instant) -> Option<f64> {
        let cpu_ns = usage.cpu_ns?;
        let sample = Sample {
            started_at: usage.started_at,
            cpu_ns,
            at,
        };
        let previous = self.lock().insert(agent_id, sample)?;
        if previous.started_at != sample.started_at || cpu_ns < previous.cpu_ns {
            return None;
        }
        let wall = at.checked_duration_since(previous.at)?.as_nanos();
        if wall == 0 {
            return None;
        }
        let percent = (cpu_ns - previous.cpu_ns) as f64 * 100.0 / wall as f64;
        Some((percent * 10.0).round() / 10.0)
    }

    /// Forgets the runtimes not in `live`.
    pub fn retain(&self, live: &HashSet<AgentId>) {
        self.lock().retain(|agent_id, _| live.contains(agent_id));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<AgentId, Sample>> {
        self.last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_stat_line_is_read_from_after_the_command_name() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
        // utime stime cutime cstime priority nice threads itrealvalue starttime …
        let line = "4242 (warren agent) (x)) S 1 4240 4240 0 -1 4194560 100 0 0 0 \
                    30 12 5 3 20 0 9 0 777 123456 2000";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                pgrp: 4240,
                cpu_ticks: 50,
                start_ticks: 777,
            })
        );
        assert_eq!(parse_stat("4242 (cut"), None);
    }

    #[test]
    fn this_process_group_is_measured() {
        let own = rustix::process::getpgrp().as_raw_nonzero().get();
        let found = process_groups(&HashSet::from([own]));
        let group = found.get(&own).expect("this test's own group");
        assert!(group.memory_bytes > 0, "{group:?}");
        assert!(group.started_at.is_some_and(|at| at <= Utc::now()));
    }

    #[test]
    fn cpu_is_a_percentage_of_one_core_between_two_samples_of_one_run() {
        let meter = CpuMeter::default();
        let agent = AgentId::new();
        let t0 = Instant::now();
        let usage = |cpu_ns| Usage {
            cpu_ns: Some(cpu_ns),
            ..Usage::default()
        };
        assert_eq!(meter.percent(agent, &usage(1_000_000_000), t0), None);
        let t1 = t0 + Duration::from_secs(2);
        assert_eq!(meter.percent(agent, &usage(2_000_000_000), t1), Some(50.0));
        // A restarted runtime's counter starts again: no figure until its next sample.
        let restarted = Usage {
            started_at: Some(Utc::now()),
            ..usage(10)
        };
        let t2 = t1 + Duration::from_secs(1);
        assert_eq!(meter.percent(agent, &restarted, t2), None);
        meter.retain(&HashSet::new());
        assert_eq!(meter.percent(agent, &usage(5), t2), None);
    }

    #[test]
    fn a_workspace_is_measured_on_disk_without_following_links() {
        let root = std::env::temp_dir().join(format!("warren-disk-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(root.join("sub")).expect("dirs");
        std::fs::write(root.join("sub/file"), vec![1u8; 64 * 1024]).expect("file");
        std::os::unix::fs::symlink("/usr", root.join("link")).expect("link");
        let size = disk_bytes(&root).expect("measured");
        assert!((64 * 1024..1024 * 1024).contains(&size), "{size}");
        std::fs::remove_dir_all(&root).expect("clean up");
        assert_eq!(disk_bytes(&root), None);
    }
}
