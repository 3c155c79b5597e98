//! The relay of a Docker engine on another machine (docs/adr/0041-docker-hosts.md): a container
//! on the engine's host network, from the agent image (its Python), forwarding
//!
//! - the sandbox network's gateway at the relay port to the platform (what the in-process relay
//!   of [`super::network`] does for a local engine), and
//! - one port of the host per container address, `first_port + offset`, to that address's
//!   runtime port, so chat workers reach runtimes on an internal network they have no route to.
//!
//! It runs as the agent user with every capability dropped and a read-only root; the engine
//! restarts it with the host (`unless-stopped`). Its arguments are in a label: a relay whose
//! arguments changed (a moved platform URL) is recreated.

use super::super::provisioner::{ProvisionError, Provisioned};
use super::{AGENT_UID, LABEL_NETWORK, failed, not_found};
use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig, RestartPolicy, RestartPolicyNameEnum};
use bollard::query_parameters::{
    CreateContainerOptions, InspectContainerOptions, LogsOptions, RemoveContainerOptions,
    StartContainerOptions,
};
use std::collections::HashMap;

/// The relay's arguments, hashed.
const LABEL_RELAY: &str = "org.warren.relay";

/// Forwards each `listen_host:port=target_host:port` argument; one task per connection, each
/// direction closed on its own (HTTP keeps working across a half-close). The in-process relay's
/// bounds hold here too: at most 1024 connections in all, 64 at once from one source on a
/// forward marked `!` (the sandboxes' way out: one sandbox cannot take the others' share), and
/// an hour per connection. It says `relaying` once every port listens, and exits when one
/// cannot (the engine restarts it; [`ensure`] reports it).
const SCRIPT: &str = r#"
import asyncio, collections, sys

MAX_ALL, MAX_PER_SOURCE, LIFETIME = 1024, 64, 3600
open_all = 0
open_by_source = collections.Counter()

async def pipe(reader, writer):
    try:
        while True:
            data = await reader.read(16384)
            if not data:
                break
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except Exception:
        pass

def forward(host, port, limited):
    async def handle(reader, writer):
        global open_all
        peer = writer.get_extra_info("peername")
        source = peer[0] if peer else "?"
        if open_all >= MAX_ALL or (limited and open_by_source[source] >= MAX_PER_SOURCE):
            writer.close()
            return
        open_all += 1
        open_by_source[source] += 1
        up_writer = None
        try:
            up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
            await asyncio.wait_for(
                asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer)), LIFETIME)
        except Exception:
            pass
        finally:
            open_all -= 1
            open_by_source[source] -= 1
            if open_by_source[source] <= 0:
                del open_by_source[source]
            writer.close()
            if up_writer is not None:
                up_writer.close()
    return handle

async def main():
    servers = []
    for spec in sys.argv[1:]:
        limited = spec.startswith("!")
        listen, _, target = spec.lstrip("!").partition("=")
        listen_host, listen_port = listen.rsplit(":", 1)
        target_host, target_port = target.rsplit(":", 1)
        servers.append(await asyncio.start_server(
            forward(target_host, int(target_port), limited), listen_host, int(listen_port),
            reuse_address=True))
    print("relaying", len(servers), "ports", flush=True)
    await asyncio.gather(*(server.serve_forever() for server in servers))

asyncio.run(main())
"#;

/// `warren-relay-<network>`.
pub fn container_name(network: &str) -> String {
    format!("warren-relay-{network}")
}

/// Makes (or keeps) the relay with these forwards (`listen=target` pairs) and starts it.
pub async fn ensure(
    docker: &Docker,
    network: &str,
    image: &str,
    forwards: &[String],
) -> Provisioned<()> {
    use sha2::{Digest, Sha256};
    let name = container_name(network);
    let mut hash = Sha256::new();
    hash.update(image.as_bytes());
    hash.update(SCRIPT.as_bytes());
    for forward in forwards {
        hash.update(forward.as_bytes());
        hash.update([0]);
    }
    let digest = hex::encode(&hash.finalize()[..8]);
    match docker
        .inspect_container(&name, None::<InspectContainerOptions>)
        .await
    {
        Ok(info) => {
            let same = info
                .config
                .and_then(|config| config.labels)
                .and_then(|labels| labels.get(LABEL_RELAY).cloned())
                .is_some_and(|label| label == digest);
            if same {
                if info.state.and_then(|state| state.running) != Some(true) {
                    docker
                        .start_container(&name, None::<StartContainerOptions>)
                        .await
                        .map_err(failed("starting the relay"))?;
                }
                return listening(docker, &name).await;
            }
            docker
                .remove_container(
                    &name,
                    Some(RemoveContainerOptions {
                        force: true,
                        ..Default::default()
                    }),
                )
                .await
                .map_err(failed("removing the old relay"))?;
        }
        Err(err) if not_found(&err) => {}
        Err(err) => return Err(failed("inspecting the relay")(err)),
    }
    let mut cmd = vec!["python3".to_owned(), "-c".to_owned(), SCRIPT.to_owned()];
    cmd.extend(forwards.iter().cloned());
    let created = docker
        .create_container(
            Some(CreateContainerOptions {
                name: Some(name.clone()),
                ..Default::default()
            }),
            ContainerCreateBody {
                image: Some(image.to_owned()),
                user: Some(format!("{AGENT_UID}:{AGENT_UID}")),
                cmd: Some(cmd),
                labels: Some(HashMap::from([
                    (LABEL_NETWORK.to_owned(), format!("{network}-relay")),
                    (LABEL_RELAY.to_owned(), digest),
                ])),
                host_config: Some(HostConfig {
                    network_mode: Some("host".into()),
                    readonly_rootfs: Some(true),
                    cap_drop: Some(vec!["ALL".into()]),
                    security_opt: Some(vec!["no-new-privileges".into()]),
                    memory: Some(256 << 20),
                    pids_limit: Some(64),
                    restart_policy: Some(RestartPolicy {
                        name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                        maximum_retry_count: None,
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await;
    match created {
        Ok(_) => {}
        // Another deployer made it meanwhile.
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 409, ..
        }) => {}
        Err(err) => return Err(failed("creating the relay")(err)),
    }
    docker
        .start_container(&name, None::<StartContainerOptions>)
        .await
        .map_err(failed("starting the relay"))?;
    listening(docker, &name).await
}

/// Waits until the relay says it listens on every port (a port taken on the host makes it exit,
/// and the engine restart it, over and over): its last words otherwise.
async fn listening(docker: &Docker, name: &str) -> Provisioned<()> {
    use futures::StreamExt;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let mut said = String::new();
        let mut logs = docker.logs(
            name,
            Some(LogsOptions {
                stdout: true,
                stderr: true,
                tail: "20".into(),
                ..Default::default()
            }),
        );
        while let Some(Ok(line)) = logs.next().await {
            said.push_str(&line.to_string());
        }
        // The last start's words: a relay that listened once and fails now has both.
        let (relaying, error) = (said.rfind("relaying"), said.rfind("Error"));
        if relaying > error {
            return Ok(());
        }
        if error.is_some() || tokio::time::Instant::now() > deadline {
            let last: String = said.lines().rev().take(3).collect::<Vec<_>>().join(" | ");
            return Err(ProvisionError(format!(
                "the relay on the Docker host does not listen (are its published ports, 20002 and up, taken there?): {last}"
            )));
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
