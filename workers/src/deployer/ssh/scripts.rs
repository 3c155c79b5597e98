//! The shell scripts the `ssh` provisioner runs on a host (as root), and the supervisor it
//! leaves there. POSIX `sh` with coreutils, util-linux (`setpriv`, `setsid`) and `useradd`:
//! what any Debian-like VM has; no systemd needed.
//!
//! Layout on the host:
//! - `/opt/warren/bin/warren-agent-<sha256 prefix>`: the runtime binary, by content.
//! - `/var/lib/warren/agents/<agent id>/` (root, group = the agent's user, 0750): `env.sh`
//!   (its settings, 0640), `run.sh` (the supervisor), `token` (the agent user's, 0400),
//!   `port`, `fingerprint`, `supervisor.pid`, `agent.log`, and `home/` (the agent user's,
//!   0700) with `workspace/` and `state/`.
//!
//! Each agent runs as a user of its own (`wa<16 hex digits of its id's SHA-256>`), so agents on one host
//! cannot read each other's files or tokens. The supervisor (`run.sh`, started with `setsid`
//! and an empty environment, so it outlives the SSH session and inherits nothing of it)
//! restarts the runtime a second after it exits, until it is sent SIGTERM.

use super::conn::quote;
use warren_domain::ids::AgentId;

/// Where agents live on a host.
pub const AGENTS_DIR: &str = "/var/lib/warren/agents";
/// Where runtime binaries are kept.
pub const BIN_DIR: &str = "/opt/warren/bin";

/// The agent's user on a host: `wa` and 16 hex digits of the SHA-256 of its id. (Not a
/// prefix of the id: ids made in one millisecond share their first digits, a time stamp, and
/// two agents must never share a user.)
pub fn user_of(agent_id: AgentId) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(agent_id.to_string().as_bytes());
    format!("wa{}", &hex::encode(digest)[..16])
}

/// The agent's directory on a host.
pub fn dir_of(agent_id: AgentId) -> String {
    format!("{AGENTS_DIR}/{agent_id}")
}

/// `d=…; u=…` for scripts about one agent.
fn about(agent_id: AgentId) -> String {
    format!(
        "set -eu\nd={}\nu={}\n",
        quote(&dir_of(agent_id)),
        quote(&user_of(agent_id))
    )
}

/// Creates the agent's user and directories (idempotent).
pub fn allocate(agent_id: AgentId) -> String {
    about(agent_id)
        + r#"mkdir -p /var/lib/warren/agents
chmod 711 /var/lib/warren /var/lib/warren/agents
if ! id -u "$u" >/dev/null 2>&1; then
  useradd --system --user-group --home-dir "$d/home" --no-create-home --shell /usr/sbin/nologin "$u"
fi
mkdir -p "$d/home/workspace" "$d/home/state"
chown root:"$u" "$d"
chmod 750 "$d"
chown -R "$u:$u" "$d/home"
chmod 700 "$d/home"
"#
}

/// Exits 0 when `path` is the binary with `sha256`, 3 when it is missing or another one.
pub fn has_binary(path: &str, sha256: &str) -> String {
    format!(
        "p={}\n[ -x \"$p\" ] || exit 3\n[ \"$(sha256sum \"$p\" | cut -d' ' -f1)\" = {} ] || exit 3\n",
        quote(path),
        quote(sha256)
    )
}

/// Stores standard input as `path` (0755), checked against `sha256`.
pub fn upload_binary(path: &str, sha256: &str) -> String {
    format!(
        "set -eu\np={}\nmkdir -p {BIN_DIR}\nchmod 755 /opt/warren {BIN_DIR}\ncat > \"$p.tmp.$$\"\n\
         [ \"$(sha256sum \"$p.tmp.$$\" | cut -d' ' -f1)\" = {} ] || {{ rm -f \"$p.tmp.$$\"; echo 'checksum mismatch' >&2; exit 4; }}\n\
         chmod 755 \"$p.tmp.$$\"\nmv -f \"$p.tmp.$$\" \"$p\"\n",
        quote(path),
        quote(sha256)
    )
}

/// Prints the TCP ports listening on the host (hex, from `/proc/net/tcp*`), then `taken
/// <port>` for each agent's kept port, then `mine <port>` for this agent's.
pub fn ports(agent_id: AgentId) -> String {
    about(agent_id)
        + r#"cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | while read -r sl local rem st rest; do
  [ "$st" = 0A ] && echo "listen ${local##*:}"
done
for f in /var/lib/warren/agents/*/port; do
  [ -f "$f" ] && echo "taken $(cat "$f")"
done
[ -f "$d/port" ] && echo "mine $(cat "$d/port")"
exit 0
"#
}

/// Writes the agent's settings (standard input: `env.sh`), its port and fingerprint, and the
/// supervisor.
pub fn configure(agent_id: AgentId, port: u16, fingerprint: &str) -> String {
    about(agent_id)
        + &format!(
            "cat > \"$d/env.sh.tmp\"\nchown root:\"$u\" \"$d/env.sh.tmp\"\nchmod 640 \"$d/env.sh.tmp\"\n\
             mv -f \"$d/env.sh.tmp\" \"$d/env.sh\"\necho {port} > \"$d/port\"\necho {} > \"$d/fingerprint\"\n",
            quote(fingerprint)
        )
        + "cat > \"$d/run.sh\" <<'SUPERVISOR'\n"
        + SUPERVISOR
        + "SUPERVISOR\nchmod 700 \"$d/run.sh\"\n"
}

/// The supervisor: runs the runtime as the agent's user with only the settings of `env.sh`,
/// again a second after it exits; SIGTERM stops both.
const SUPERVISOR: &str = r#"#!/bin/sh
d=$(dirname "$0")
echo $$ > "$d/supervisor.pid"
# The agent's limits: a cgroup of its own where the host lets root make one (cgroup v2), and
# per-user and per-process rlimits everywhere (processes and threads, data memory).
. "$d/env.sh"
cg=/sys/fs/cgroup/warren-agent-${d##*/}
if [ -w /sys/fs/cgroup/cgroup.procs ] && mkdir -p "$cg" 2>/dev/null; then
  echo "+memory +pids +cpu" > /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null
  echo "$LIMIT_MEMORY" > "$cg/memory.max" 2>/dev/null
  echo "$LIMIT_PIDS" > "$cg/pids.max" 2>/dev/null
  echo "$LIMIT_CPU 100000" > "$cg/cpu.max" 2>/dev/null
  echo $$ > "$cg/cgroup.procs" 2>/dev/null
fi
child=
trap 'if [ -n "$child" ]; then kill -CONT "$child" 2>/dev/null; kill -TERM "$child" 2>/dev/null; wait "$child"; fi; exit 0' TERM INT HUP
while :; do
  (
    set -a
    . "$d/env.sh"
    set +a
    cd "$WARREN_AGENT_WORKSPACE"
    exec prlimit --nproc="$LIMIT_PIDS" --data="$LIMIT_MEMORY" -- \
      setpriv --reuid="$USER" --regid="$USER" --init-groups -- "$RUNTIME_BINARY"
  ) >> "$d/agent.log" 2>&1 &
  child=$!
  wait "$child"
  child=
  sleep 1
done
"#;

/// The agent's `env.sh`: every setting of its runtime, quoted.
pub fn env_file(vars: &[(&str, &str)]) -> String {
    vars.iter()
        .map(|(name, value)| format!("{name}={}\n", quote(value)))
        .collect()
}

/// Stores standard input as the agent's token (its user's alone, 0400).
pub fn write_token(agent_id: AgentId) -> String {
    about(agent_id)
        + r#"umask 077
cat > "$d/token.tmp"
chown "$u:$u" "$d/token.tmp"
chmod 400 "$d/token.tmp"
mv -f "$d/token.tmp" "$d/token"
"#
}

/// Stops the supervisor and every process of the agent's user (SIGTERM, then SIGKILL after
/// five seconds). Fine when nothing runs or the agent is unknown.
pub fn stop(agent_id: AgentId) -> String {
    about(agent_id)
        + r#"[ -d "$d" ] || exit 0
uid=$(id -u "$u" 2>/dev/null) || exit 0
sup=
if [ -f "$d/supervisor.pid" ]; then
  sup=$(cat "$d/supervisor.pid")
  grep -qs run.sh "/proc/$sup/cmdline" || sup=
fi
mine() { for p in /proc/[0-9]*; do [ "$(stat -c %u "$p" 2>/dev/null)" = "$uid" ] && echo "${p#/proc/}"; done; return 0; }
for p in $(mine); do kill -CONT "$p" 2>/dev/null || true; done
[ -n "$sup" ] && kill -TERM "$sup" 2>/dev/null || true
i=0
while [ $i -lt 50 ]; do
  left=$(mine)
  if [ -n "$sup" ] && [ -d "/proc/$sup" ]; then left="$left $sup"; fi
  [ -z "$(echo $left)" ] && break
  sleep 0.1
  i=$((i + 1))
done
[ -n "$sup" ] && kill -KILL "$sup" 2>/dev/null || true
for p in $(mine); do kill -KILL "$p" 2>/dev/null || true; done
rm -f "$d/supervisor.pid"
"#
}

/// Starts the supervisor (after [`stop`]), detached from the SSH session.
pub fn start(agent_id: AgentId) -> String {
    stop(agent_id)
        + r#"env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin setsid -f sh "$d/run.sh" </dev/null >/dev/null 2>&1
i=0
while [ ! -f "$d/supervisor.pid" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
[ -f "$d/supervisor.pid" ]
"#
}

/// Sends `signal` (`STOP` or `CONT`) to every process of the agent's user.
pub fn signal(agent_id: AgentId, signal: &str) -> String {
    about(agent_id)
        + &format!(
            r#"uid=$(id -u "$u")
for p in /proc/[0-9]*; do [ "$(stat -c %u "$p" 2>/dev/null)" = "$uid" ] && kill -{signal} "${{p#/proc/}}" 2>/dev/null; done
exit 0
"#
        )
}

/// Stops the agent and removes its user and directory.
pub fn destroy(agent_id: AgentId) -> String {
    stop(agent_id)
        + r#"userdel "$u" 2>/dev/null || true
rmdir "/sys/fs/cgroup/warren-agent-${d##*/}" 2>/dev/null || true
rm -rf "$d"
"#
}

/// Prints `btime <boot time, s>` and `page <page size, bytes>`, then a line per agent
/// directory: `<id> <cpu ticks> <resident pages> <first start, ticks after boot or -> <bytes
/// on disk or ->`, summed over every process of the agent's user (with the children they
/// reaped), from `/proc`.
pub const USAGE: &str = r#"echo "btime $(grep '^btime' /proc/stat | cut -d' ' -f2)"
echo "page $(getconf PAGESIZE)"
for d in /var/lib/warren/agents/*/; do
  [ -d "$d" ] || continue
  d=${d%/}
  id=${d##*/}
  uid=$(stat -c %u "$d/home" 2>/dev/null) || continue
  cpu=0; rss=0; start=-
  for p in /proc/[0-9]*; do
    [ "$(stat -c %u "$p" 2>/dev/null)" = "$uid" ] || continue
    s=$(cat "$p/stat" 2>/dev/null) || continue
    set -- ${s##*) }
    cpu=$((cpu + ${12} + ${13} + ${14} + ${15}))
    rss=$((rss + ${22}))
    if [ "$start" = - ] || [ "${20}" -lt "$start" ]; then start=${20}; fi
  done
  disk=$(timeout 5 du -s -B1 "$d/home" 2>/dev/null | cut -f1)
  echo "$id $cpu $rss $start ${disk:--}"
done
exit 0
"#;

/// One line per agent directory on the host: `<id> <running|paused|stopped> <port|->
/// <fingerprint|->`.
pub const LIST: &str = r#"for d in /var/lib/warren/agents/*/; do
  [ -d "$d" ] || continue
  d=${d%/}
  id=${d##*/}
  s=stopped
  if [ -f "$d/supervisor.pid" ]; then
    sup=$(cat "$d/supervisor.pid")
    if grep -qs run.sh "/proc/$sup/cmdline"; then
      s=running
      uid=$(stat -c %u "$d/home" 2>/dev/null || echo none)
      for p in /proc/[0-9]*; do
        if [ "$(stat -c %u "$p" 2>/dev/null)" = "$uid" ]; then
          st=$(cut -d' ' -f3 "$p/stat" 2>/dev/null)
          [ "$st" = T ] && s=paused
          break
        fi
      done
    fi
  fi
  port=$(cat "$d/port" 2>/dev/null || echo -)
  fp=$(cat "$d/fingerprint" 2>/dev/null || echo -)
  echo "$id $s $port $fp"
done
exit 0
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agents_made_in_one_millisecond_get_users_of_their_own() {
        // Two ids a test made one after the other: their first 16 digits are a time stamp.
        let a: AgentId = "01a2489f-1798-75ba-b033-99b52d7bde8d"
            .parse()
            .expect("an id");
        let b: AgentId = "01a2489f-1798-75ba-b033-99ba688f9895"
            .parse()
            .expect("an id");
        assert_ne!(user_of(a), user_of(b));
        for user in [user_of(a), user_of(b)] {
            assert_eq!(user.len(), 18, "{user}");
            assert!(user.starts_with("wa"), "{user}");
        }
        assert_eq!(user_of(a), user_of(a), "one agent, one user, every time");
    }
}
