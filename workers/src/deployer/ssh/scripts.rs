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

/// Where a warm pool's prepared runtimes wait on a host, one directory per slot.
pub const POOL_DIR: &str = "/var/lib/warren/pool";

/// A warm pool slot's user on a host.
pub fn slot_user(slot: &str) -> String {
    format!("wp{slot}")
}

/// A warm pool slot's directory on a host.
pub fn slot_dir(slot: &str) -> String {
    format!("{POOL_DIR}/{slot}")
}

/// `d=…; u=…` for scripts about one agent. The user is the owner of the agent's `home/` when
/// there is one (an agent that took a warm pool's slot runs as the slot's user: its directory
/// is a link to the slot's), else the agent's own.
fn about(agent_id: AgentId) -> String {
    format!(
        "set -eu\nd={}\nu=$(stat -c %U \"$d/home\" 2>/dev/null || true)\ncase \"$u\" in ''|UNKNOWN) u={} ;; esac\n",
        quote(&dir_of(agent_id)),
        quote(&user_of(agent_id))
    )
}

/// `d=…; u=…` for scripts about one warm pool slot.
fn about_slot(slot: &str) -> String {
    format!(
        "set -eu\nd={}\nu={}\n",
        quote(&slot_dir(slot)),
        quote(&slot_user(slot))
    )
}

/// Creates the agent's user and directories (idempotent).
pub fn allocate(agent_id: AgentId) -> String {
    about(agent_id) + ALLOCATE
}

/// The user `$u` and the directory `$d` (idempotent).
const ALLOCATE: &str = r#"mkdir -p "${d%/*}"
chmod 711 /var/lib/warren "${d%/*}"
if ! id -u "$u" >/dev/null 2>&1; then
  useradd --system --user-group --home-dir "$d/home" --no-create-home --shell /usr/sbin/nologin "$u"
fi
mkdir -p "$d/home/workspace" "$d/home/state"
chown root:"$u" "$d"
chmod 750 "$d"
chown -R "$u:$u" "$d/home"
chmod 700 "$d/home"
"#;

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
/// <port>` for each agent's and warm pool slot's kept port, then `mine <port>` for this
/// agent's.
pub fn ports(agent_id: AgentId) -> String {
    about(agent_id) + PORTS
}

/// Like [`ports`], for a new warm pool slot (which keeps no port yet).
pub fn ports_for_slot(slot: &str) -> String {
    about_slot(slot) + PORTS
}

const PORTS: &str = r#"cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | while read -r sl local rem st rest; do
  [ "$st" = 0A ] && echo "listen ${local##*:}"
done
for f in /var/lib/warren/agents/*/port /var/lib/warren/pool/*/port; do
  [ -f "$f" ] && echo "taken $(cat "$f")"
done
[ -f "$d/port" ] && echo "mine $(cat "$d/port")"
exit 0
"#;

/// Writes the agent's settings (standard input: `env.sh`), its port and fingerprint, and the
/// supervisor.
/// Makes the directories first when they are missing (a host that lost them, a warm pool's
/// slot gone with its host).
pub fn configure(agent_id: AgentId, port: u16, fingerprint: &str) -> String {
    about(agent_id)
        + "if [ ! -d \"$d/home\" ]; then\n[ -L \"$d\" ] && rm -f \"$d\"\n"
        + ALLOCATE
        + "fi\n"
        + &settings(port, fingerprint)
}

/// `$d`'s settings from standard input (`env.sh`, with `USER` the directory's user), its port,
/// its fingerprint and its supervisor.
fn settings(port: u16, fingerprint: &str) -> String {
    format!(
        "cat > \"$d/env.sh.tmp\"\necho \"USER=$u\" >> \"$d/env.sh.tmp\"\n\
         chown root:\"$u\" \"$d/env.sh.tmp\"\nchmod 640 \"$d/env.sh.tmp\"\n\
         mv -f \"$d/env.sh.tmp\" \"$d/env.sh\"\necho {port} > \"$d/port\"\necho {} > \"$d/fingerprint\"\n",
        quote(fingerprint)
    ) + "cat > \"$d/run.sh\" <<'SUPERVISOR'\n"
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
pub fn env_file(vars: &[(&str, String)]) -> String {
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
    about(agent_id) + STOP
}

const STOP: &str = r#"[ -d "$d" ] || exit 0
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
"#;

/// Starts the supervisor (after [`stop`]), detached from the SSH session.
pub fn start(agent_id: AgentId) -> String {
    stop(agent_id) + START
}

/// Starts `$d`'s supervisor, detached, and waits for its pidfile.
const START: &str = r#"env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin setsid -f sh "$d/run.sh" </dev/null >/dev/null 2>&1
i=0
while [ ! -f "$d/supervisor.pid" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
[ -f "$d/supervisor.pid" ]
"#;

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

/// Stops the agent and removes its user and directory (and the warm pool slot it took, its
/// directory being a link to the slot's).
pub fn destroy(agent_id: AgentId) -> String {
    stop(agent_id)
        + r#"t=$(readlink "$d" 2>/dev/null || true)
userdel "$u" 2>/dev/null || true
rmdir "/sys/fs/cgroup/warren-agent-${d##*/}" 2>/dev/null || true
rm -rf "$d"
case "$t" in
  /var/lib/warren/pool/?*)
    rmdir "/sys/fs/cgroup/warren-agent-${t##*/}" 2>/dev/null || true
    rm -rf "$t"
    ;;
esac
"#
}

/// Stops a warm pool slot's runtime and removes its user and directory: a free one only if it
/// is still free (claimed by this rename, so no agent takes it meanwhile), a `stray` one only
/// if no agent's directory links to it.
pub fn discard_slot(slot: &str, stray: bool) -> String {
    let claim = if stray {
        r#"for a in /var/lib/warren/agents/*; do
  [ -L "$a" ] && [ "$(readlink "$a")" = "$d" ] && exit 0
done
"#
    } else {
        "mv \"$d/free\" \"$d/discarding\" 2>/dev/null || exit 0\n"
    };
    about_slot(slot)
        + claim
        + STOP
        + r#"userdel "$u" 2>/dev/null || true
rmdir "/sys/fs/cgroup/warren-agent-${d##*/}" 2>/dev/null || true
rm -rf "$d"
"#
}

/// Prepares warm pool slot `slot` and starts its runtime waiting for an assignment: its user
/// and directories, its settings (standard input: `env.sh`), `port`, `fingerprint`, the
/// `binary` it runs, the supervisor, and last the `free` mark that lets an agent take it.
pub fn create_slot(slot: &str, port: u16, fingerprint: &str, binary: &str) -> String {
    about_slot(slot)
        + ALLOCATE
        + &settings(port, fingerprint)
        + &format!("echo {} > \"$d/binary\"\n", quote(binary))
        + START
        + "touch \"$d/free\"\n"
}

/// One line per warm pool slot: `<slot> <free|taken|stray> <up|down> <fingerprint|->
/// <binary|-> <seconds since it was claimed|->`. A claimed slot no agent's directory links to
/// is `stray` (an interrupted take).
pub const POOL_LIST: &str = r#"now=$(date +%s)
for s in /var/lib/warren/pool/*/; do
  [ -d "$s" ] || continue
  s=${s%/}
  state=free
  age=-
  if [ ! -f "$s/free" ]; then
    state=stray
    for a in /var/lib/warren/agents/*; do
      [ -L "$a" ] && [ "$(readlink "$a")" = "$s" ] && state=taken
    done
    age=$((now - $(stat -c %Y "$s/claimed" 2>/dev/null || stat -c %Y "$s")))
  fi
  up=down
  sup=$(cat "$s/supervisor.pid" 2>/dev/null || echo none)
  grep -qs run.sh "/proc/$sup/cmdline" && up=up
  echo "${s##*/} $state $up $(cat "$s/fingerprint" 2>/dev/null || echo -) $(cat "$s/binary" 2>/dev/null || echo -) $age"
done
exit 0
"#;

/// Takes a free, running warm pool slot prepared with `fingerprint` and `binary` for the agent
/// (its directory becomes a link to the slot's) and prints `taken <slot> <port>`; prints the
/// same again for an agent that took one already. Exits 3 when there is none (or the agent
/// has a directory of its own).
pub fn take_slot(agent_id: AgentId, fingerprint: &str, binary: &str) -> String {
    about(agent_id)
        + &format!("fp={}\nbin={}\n", quote(fingerprint), quote(binary))
        + r#"if [ -L "$d" ]; then
  t=$(readlink "$d")
  echo "taken ${t##*/} $(cat "$d/port")"
  exit 0
fi
[ -e "$d" ] && exit 3
mkdir -p /var/lib/warren/agents
chmod 711 /var/lib/warren /var/lib/warren/agents
for s in /var/lib/warren/pool/*/; do
  s=${s%/}
  [ -f "$s/free" ] || continue
  [ "$(cat "$s/fingerprint" 2>/dev/null)" = "$fp" ] || continue
  [ "$(cat "$s/binary" 2>/dev/null)" = "$bin" ] || continue
  sup=$(cat "$s/supervisor.pid" 2>/dev/null || echo none)
  grep -qs run.sh "/proc/$sup/cmdline" || continue
  # One rename wins: two takers never get one slot.
  if mv "$s/free" "$s/claimed" 2>/dev/null; then
    touch "$s/claimed"
    ln -s "$s" "$d"
    echo "taken ${s##*/} $(cat "$s/port")"
    exit 0
  fi
done
exit 3
"#
}

/// Makes the waiting runtime of the slot the agent took its own. Standard input, a line each
/// in base64: the token, the agent's `env.sh`, its assignment (JSON). Writes the settings and
/// the token, then the assignment the runtime waits for (last: the token is whole when it is
/// read), and starts the supervisor if the slot's stopped meanwhile.
pub fn assign_slot(agent_id: AgentId, fingerprint: &str) -> String {
    about(agent_id)
        + &format!("fp={}\n", quote(fingerprint))
        + r#"umask 077
IFS= read -r token
IFS= read -r settings
IFS= read -r assignment
printf %s "$settings" | base64 -d > "$d/env.sh.tmp"
echo "USER=$u" >> "$d/env.sh.tmp"
chown root:"$u" "$d/env.sh.tmp"
chmod 640 "$d/env.sh.tmp"
mv -f "$d/env.sh.tmp" "$d/env.sh"
echo "$fp" > "$d/fingerprint"
printf %s "$token" | base64 -d > "$d/token.tmp"
chown "$u:$u" "$d/token.tmp"
chmod 400 "$d/token.tmp"
mv -f "$d/token.tmp" "$d/token"
printf %s "$assignment" | base64 -d > "$d/assignment.tmp"
chown "$u:$u" "$d/assignment.tmp"
chmod 400 "$d/assignment.tmp"
mv -f "$d/assignment.tmp" "$d/assignment.json"
sup=$(cat "$d/supervisor.pid" 2>/dev/null || echo none)
grep -qs run.sh "/proc/$sup/cmdline" && exit 0
"# + START
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

    #[test]
    fn every_script_is_valid_sh() {
        let agent = AgentId::new();
        let slot = "0123456789abcdef";
        let scripts = [
            allocate(agent),
            has_binary("/opt/warren/bin/x", "00"),
            upload_binary("/opt/warren/bin/x", "00"),
            ports(agent),
            ports_for_slot(slot),
            configure(agent, 20000, "fp"),
            write_token(agent),
            stop(agent),
            start(agent),
            signal(agent, "STOP"),
            destroy(agent),
            discard_slot(slot, true),
            discard_slot(slot, false),
            create_slot(slot, 20000, "fp", "/opt/warren/bin/x"),
            take_slot(agent, "fp", "/opt/warren/bin/x"),
            assign_slot(agent, "fp"),
            USAGE.to_owned(),
            LIST.to_owned(),
            POOL_LIST.to_owned(),
        ];
        for script in scripts {
            let checked = std::process::Command::new("sh")
                .args(["-n", "-c", &script])
                .output()
                .expect("sh");
            assert!(
                checked.status.success(),
                "{}\n{script}",
                String::from_utf8_lossy(&checked.stderr)
            );
        }
    }
}
