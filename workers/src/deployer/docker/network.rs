//! The sandbox network: what a sandbox can reach, and how it reaches the platform
//! (docs/adr/0025-sandboxes.md).
//!
//! - **The network** is a Docker bridge network marked `internal` (no route off the host) with
//!   inter-container traffic disabled, so a sandbox reaches neither the internet nor another
//!   sandbox. Its bridge is named `wsb-<hash of the network name>`; its subnet is configured
//!   (`WARREN_SANDBOX_SUBNET`), which is what lets each container keep a fixed address.
//! - **The firewall**: an `iptables` chain `WARREN-<hash>` on the host's `INPUT` for that bridge
//!   accepts replies and the relay's port and drops everything else, so a sandbox cannot open a
//!   connection to any host service (NATS, PostgreSQL, the Docker API over TCP, the edge
//!   itself) even where one listens on every address.
//! - **The internet switch** (`WARREN_SANDBOX_INTERNET`): off, the network is `internal` and
//!   nothing leaves the host. On, the network is a routed bridge (the engine masquerades it),
//!   and a second chain `WARREN-<hash>-NET`, hooked into `DOCKER-USER` for the bridge, drops
//!   whatever a sandbox sends to a non-public range ([`NOT_INTERNET`]) but DNS to the host's
//!   own name servers: sandboxes reach public addresses and still no host, private network,
//!   cloud metadata service or other sandbox.
//! - **The relay** listens on the bridge's gateway address and forwards each connection to the
//!   edge (the platform URL the deployer was given, loopback under `warren dev`): a sandbox's one
//!   path out, to the runtime API and the model proxy.

use super::super::provisioner::ProvisionError;
use super::{failed, not_found};
use bollard::Docker;
use bollard::models::NetworkCreateRequest;
use bollard::query_parameters::InspectNetworkOptions;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// A short hash of the network's name, for the bridge and chain names (Linux caps interface
/// names at 15 bytes).
fn tag(network: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(&Sha256::digest(network.as_bytes())[..4])
}

/// The bridge interface of a sandbox network.
pub fn bridge_name(network: &str) -> String {
    format!("wsb-{}", tag(network))
}

/// The firewall chain of a sandbox network.
pub fn chain_name(network: &str) -> String {
    format!("WARREN-{}", tag(network).to_uppercase())
}

/// The chain that keeps a sandbox network with internet off the non-public ranges.
pub fn egress_chain_name(network: &str) -> String {
    format!("{}-NET", chain_name(network))
}

/// Destinations a sandbox never reaches, internet or not: "this network", private (RFC 1918),
/// shared address space (carrier-grade NAT, RFC 6598), loopback, link-local (cloud metadata
/// services), IETF protocol assignments, benchmarking, multicast, and reserved + broadcast. The
/// documentation ranges (TEST-NET-1..3) are not on the internet either, but harmless: the
/// tests stand a "public" host up on one.
pub const NOT_INTERNET: [&str; 11] = [
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "224.0.0.0/4",
    "240.0.0.0/4",
];

/// The network, up: its subnet, and the relay task (stopped when this is dropped).
pub struct SandboxNetwork {
    base: u32,
    prefix: u8,
    gateway: Ipv4Addr,
    platform_url: String,
    /// The relay, when it runs in this process.
    relay: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for SandboxNetwork {
    fn drop(&mut self) {
        if let Some(relay) = &self.relay {
            relay.abort();
        }
    }
}

impl SandboxNetwork {
    /// Makes (or finds) the network (routed to the internet when `internet`, else internal),
    /// installs the firewall when asked, and starts the relay to `platform_url`'s host and port
    /// on the gateway's `relay_port`.
    pub async fn up(
        docker: &Docker,
        name: &str,
        subnet: &str,
        relay_port: u16,
        platform_url: &str,
        firewall: bool,
        internet: bool,
    ) -> Result<Self, ProvisionError> {
        if internet && !firewall {
            return Err(ProvisionError(
                "WARREN_SANDBOX_INTERNET=true needs the sandbox firewall (WARREN_SANDBOX_FIREWALL=true): it keeps sandboxes off the host and private networks".into(),
            ));
        }
        let (base, prefix, gateway) = ensure(docker, name, subnet, internet).await?;
        if firewall {
            install_firewall(name, relay_port).await?;
            if internet {
                install_egress(name).await?;
            } else {
                remove_egress(name).await;
            }
        } else {
            tracing::warn!(
                network = name,
                "WARREN_SANDBOX_FIREWALL=false: sandboxes can connect to every host service listening on all addresses"
            );
        }
        let target = target_of(platform_url)?;
        let listen = SocketAddr::from((gateway, relay_port));
        let listener = TcpListener::bind(listen).await.map_err(|err| {
            ProvisionError(format!(
                "the relay cannot listen on {listen} (the sandbox network's gateway; is the Docker engine on this host?): {err}"
            ))
        })?;
        let relay = tokio::spawn(relay(listener, target));
        Ok(Self {
            base,
            prefix,
            gateway,
            platform_url: relayed_url(listen, platform_url),
            relay: Some(relay),
        })
    }

    /// The network on a Docker engine of another machine (docs/adr/0041-docker-hosts.md):
    /// made (or found) internal, with neither firewall nor relay here. The engine's host runs
    /// them: its firewall from [`firewall_script`], its relay as a container.
    pub async fn remote(
        docker: &Docker,
        name: &str,
        subnet: &str,
        relay_port: u16,
        platform_url: &str,
    ) -> Result<Self, ProvisionError> {
        let (base, prefix, gateway) = ensure(docker, name, subnet, false).await?;
        target_of(platform_url)?;
        Ok(Self {
            base,
            prefix,
            gateway,
            platform_url: relayed_url(SocketAddr::from((gateway, relay_port)), platform_url),
            relay: None,
        })
    }

    /// The address `offset` places into the subnet.
    pub fn at(&self, offset: u32) -> Ipv4Addr {
        Ipv4Addr::from(self.base + offset)
    }

    /// How far into the subnet `ip` is.
    pub fn offset_of(&self, ip: Ipv4Addr) -> u32 {
        u32::from(ip).wrapping_sub(self.base)
    }

    /// The gateway (the host's address on the network).
    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway
    }

    /// The platform's URL as sandboxes reach it (through the relay).
    pub fn platform_url(&self) -> &str {
        &self.platform_url
    }

    /// Whether `ip` is on the network.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::MAX
            .checked_shl(32 - u32::from(self.prefix))
            .unwrap_or(0);
        u32::from(ip) & mask == self.base & mask && self.hosts().any(|host| host == ip)
    }

    /// The addresses containers may have: the subnet's but the network's own, the gateway and
    /// the broadcast.
    pub fn hosts(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        let size = 1u32 << (32 - u32::from(self.prefix));
        (1..size.saturating_sub(1))
            .map(move |offset| Ipv4Addr::from(self.base + offset))
            .filter(move |ip| *ip != self.gateway)
    }
}

/// The platform's URL as sandboxes reach it: the relay's address, the platform URL's path.
fn relayed_url(relay: SocketAddr, platform_url: &str) -> String {
    let path = platform_url
        .split_once("://")
        .and_then(|(_, rest)| rest.split_once('/'))
        .map(|(_, path)| format!("/{path}"))
        .unwrap_or_default();
    format!("http://{relay}{}", path.trim_end_matches('/'))
}

/// Makes (or finds) the network and reads its subnet: base, prefix length, gateway.
async fn ensure(
    docker: &Docker,
    name: &str,
    subnet: &str,
    internet: bool,
) -> Result<(u32, u8, Ipv4Addr), ProvisionError> {
    ensure_network(docker, name, subnet, internet).await?;
    let inspect = docker
        .inspect_network(name, None::<InspectNetworkOptions>)
        .await
        .map_err(failed("inspecting the sandbox network"))?;
    // Whether a network is internal is fixed when it is made.
    if inspect.internal != Some(!internet) {
        let made = if internet { "internal" } else { "routed" };
        return Err(ProvisionError(format!(
            "the Docker network {name} exists but is {made}, and WARREN_SANDBOX_INTERNET={internet} wants the other kind: stop the deployer, remove the sandbox containers (docker rm -f $(docker ps -aq --filter label=org.warren.network={name})) and the network (docker network rm {name}), and start it again (running agents are recreated on their addresses)"
        )));
    }
    inspect
        .ipam
        .and_then(|ipam| ipam.config)
        .unwrap_or_default()
        .into_iter()
        .find_map(|config| {
            let subnet = config.subnet?;
            let (base, prefix) = subnet.split_once('/')?;
            let base: Ipv4Addr = base.parse().ok()?;
            let prefix: u8 = prefix.parse().ok().filter(|p| *p <= 30)?;
            let gateway = config
                .gateway
                .and_then(|gateway| gateway.parse().ok())
                .unwrap_or_else(|| Ipv4Addr::from(u32::from(base) + 1));
            Some((u32::from(base), prefix, gateway))
        })
        .ok_or_else(|| ProvisionError(format!("the Docker network {name} has no IPv4 subnet")))
}

/// The `host:port` the relay forwards to.
pub fn target_of(platform_url: &str) -> Result<String, ProvisionError> {
    let rest = platform_url
        .strip_prefix("http://")
        .ok_or_else(|| {
            ProvisionError(format!(
                "WARREN_RUNTIME_PLATFORM_URL {platform_url} must be an http:// URL for docker sandboxes (the relay forwards plain TCP)"
            ))
        })?;
    let authority = rest.split('/').next().unwrap_or_default();
    Ok(
        if authority
            .rsplit_once(':')
            .is_some_and(|(_, port)| port.parse::<u16>().is_ok())
        {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        },
    )
}

async fn ensure_network(
    docker: &Docker,
    name: &str,
    subnet: &str,
    internet: bool,
) -> Result<(), ProvisionError> {
    match docker
        .inspect_network(name, None::<InspectNetworkOptions>)
        .await
    {
        Ok(_) => return Ok(()),
        Err(err) if not_found(&err) => {}
        Err(err) => return Err(failed("inspecting the sandbox network")(err)),
    }
    let options = HashMap::from([
        (
            "com.docker.network.bridge.enable_icc".to_owned(),
            "false".to_owned(),
        ),
        (
            "com.docker.network.bridge.name".to_owned(),
            bridge_name(name),
        ),
    ]);
    match docker
        .create_network(NetworkCreateRequest {
            name: name.to_owned(),
            driver: Some("bridge".into()),
            // Internal: no route off the host. Routed only with the internet switch on, behind
            // the egress chain.
            internal: Some(!internet),
            // Fixed container addresses need a subnet of our own.
            ipam: Some(bollard::models::Ipam {
                config: Some(vec![bollard::models::IpamConfig {
                    subnet: Some(subnet.to_owned()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            options: Some(options),
            labels: Some(HashMap::from([(
                "org.warren.sandbox".to_owned(),
                "true".to_owned(),
            )])),
            ..Default::default()
        })
        .await
    {
        Ok(_) => Ok(()),
        // Made by another deployer meanwhile.
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 409, ..
        }) => Ok(()),
        Err(err) => Err(failed("creating the sandbox network")(err)),
    }
}

/// Applies `rules` (`iptables-restore` input) with `--noflush`: the chains it names are
/// replaced in one commit, every other rule stays.
async fn restore(rules: &str) -> Result<bool, ProvisionError> {
    use tokio::io::AsyncWriteExt;
    let spawned = tokio::process::Command::new("iptables-restore")
        .args(["-w", "5", "--noflush"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let failed = |err: std::io::Error| {
        ProvisionError(format!(
            "running iptables-restore failed ({err}): the sandbox firewall needs iptables and root (or set WARREN_SANDBOX_FIREWALL=false and keep every host service on loopback)"
        ))
    };
    let mut child = spawned.map_err(failed)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(rules.as_bytes()).await.map_err(failed)?;
    }
    let output = child.wait_with_output().await.map_err(failed)?;
    if !output.status.success() {
        tracing::warn!(
            stderr = %String::from_utf8_lossy(&output.stderr).trim(),
            "iptables-restore refused the sandbox firewall's rules"
        );
    }
    Ok(output.status.success())
}

async fn iptables(args: &[&str]) -> Result<bool, ProvisionError> {
    let output = tokio::process::Command::new("iptables")
        .args(["-w", "5"])
        .args(args)
        .output()
        .await
        .map_err(|err| {
            ProvisionError(format!(
                "running iptables failed ({err}): the sandbox firewall needs iptables and root (or set WARREN_SANDBOX_FIREWALL=false and keep every host service on loopback)"
            ))
        })?;
    Ok(output.status.success())
}

/// The sandbox firewall's chain as `iptables-restore --noflush` input: it replaces the chain's
/// rules (or makes the chain) in one commit. Flushing and appending rule by rule instead left the
/// chain empty for a moment at every reinstall, and a sandbox could reach host ports then.
fn firewall_rules(network: &str, relay_port: u16) -> String {
    let chain = chain_name(network);
    format!(
        "*filter\n\
         :{chain} - [0:0]\n\
         -A {chain} -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\n\
         -A {chain} -p tcp --dport {relay_port} -j ACCEPT\n\
         -A {chain} -j DROP\n\
         COMMIT\n"
    )
}

/// The same firewall as [`install_firewall`] as a POSIX shell script, for the host of a Docker
/// engine the deployer reaches over SSH (run there as root): the chain accepts replies and the
/// relay's port from the network's bridge and drops the rest.
pub fn firewall_script(network: &str, relay_port: u16) -> String {
    let chain = chain_name(network);
    let bridge = bridge_name(network);
    let rules = firewall_rules(network, relay_port);
    format!(
        "set -e\n\
         command -v iptables-restore >/dev/null || {{ echo 'the sandbox firewall needs iptables on the host' >&2; exit 3; }}\n\
         iptables-restore -w 5 --noflush <<'SANDBOX_RULES'\n{rules}SANDBOX_RULES\n\
         iptables -w 5 -C INPUT -i {bridge} -j {chain} 2>/dev/null || iptables -w 5 -I INPUT -i {bridge} -j {chain}\n"
    )
}

/// (Re)writes the chain, in one commit, and hooks it into `INPUT` for the network's bridge.
async fn install_firewall(network: &str, relay_port: u16) -> Result<(), ProvisionError> {
    let chain = chain_name(network);
    let bridge = bridge_name(network);
    if !restore(&firewall_rules(network, relay_port)).await? {
        return Err(ProvisionError(format!(
            "iptables-restore could not write the chain {chain}: the sandbox firewall needs root (or set WARREN_SANDBOX_FIREWALL=false and keep every host service on loopback)"
        )));
    }
    let hook = ["INPUT", "-i", bridge.as_str(), "-j", chain.as_str()];
    if !iptables(&[&["-C"], &hook[..]].concat()).await?
        && !iptables(&[&["-I"], &hook[..]].concat()).await?
    {
        return Err(ProvisionError(format!(
            "iptables could not hook {chain} into INPUT"
        )));
    }
    Ok(())
}

/// (Re)writes the egress chain of a sandbox network with internet and hooks it first into
/// `DOCKER-USER` (which the engine evaluates before its own forwarding rules) for the
/// network's bridge: DNS to the host's name servers passes, every other non-public
/// destination is dropped, the rest goes on to the engine's rules (accepted and masqueraded).
/// Traffic to the host itself never comes here: it is `INPUT`'s, and [`install_firewall`]'s.
async fn install_egress(network: &str) -> Result<(), ProvisionError> {
    let chain = egress_chain_name(network);
    let bridge = bridge_name(network);
    let mut rules = format!("*filter\n:{chain} - [0:0]\n");
    // The engine's DNS server forwards a sandbox's lookups from the sandbox's own network
    // namespace: to the host's name servers, often on a private or link-local address.
    for server in host_nameservers() {
        for proto in ["udp", "tcp"] {
            rules.push_str(&format!(
                "-A {chain} -d {server} -p {proto} --dport 53 -j RETURN\n"
            ));
        }
    }
    for range in NOT_INTERNET {
        rules.push_str(&format!("-A {chain} -d {range} -j DROP\n"));
    }
    rules.push_str("COMMIT\n");
    if !restore(&rules).await? {
        return Err(ProvisionError(format!(
            "iptables-restore could not write the chain {chain}"
        )));
    }
    let hook = ["DOCKER-USER", "-i", bridge.as_str(), "-j", chain.as_str()];
    if !iptables(&[&["-C"], &hook[..]].concat()).await?
        && !iptables(&[&["-I"], &hook[..]].concat()).await?
    {
        return Err(ProvisionError(format!(
            "iptables could not hook {chain} into DOCKER-USER (is the Docker engine managing iptables?)"
        )));
    }
    Ok(())
}

/// Unhooks and removes a sandbox network's egress chain, if it has one.
async fn remove_egress(network: &str) {
    let chain = egress_chain_name(network);
    let bridge = bridge_name(network);
    while iptables(&["-D", "DOCKER-USER", "-i", &bridge, "-j", &chain])
        .await
        .unwrap_or(false)
    {}
    let _ = iptables(&["-F", &chain]).await;
    let _ = iptables(&["-X", &chain]).await;
}

/// The IPv4 name servers the engine forwards sandboxes' lookups to (the host's; systemd's
/// upstream ones when the host asks a local stub), loopback left out.
fn host_nameservers() -> Vec<Ipv4Addr> {
    ["/run/systemd/resolve/resolv.conf", "/etc/resolv.conf"]
        .iter()
        .find_map(|path| std::fs::read_to_string(path).ok())
        .map(|conf| nameservers_in(&conf))
        .unwrap_or_default()
}

fn nameservers_in(conf: &str) -> Vec<Ipv4Addr> {
    conf.lines()
        .filter_map(|line| line.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.trim().parse::<Ipv4Addr>().ok())
        .filter(|ip| !ip.is_loopback())
        .collect()
}

/// Removes a sandbox network's firewall (its network and containers must be gone first).
pub async fn remove_firewall(network: &str) {
    let chain = chain_name(network);
    let bridge = bridge_name(network);
    let _ = iptables(&["-D", "INPUT", "-i", &bridge, "-j", &chain]).await;
    let _ = iptables(&["-F", &chain]).await;
    let _ = iptables(&["-X", &chain]).await;
    remove_egress(network).await;
}

/// Connections one sandbox (one source address) may hold through the relay at once.
const RELAY_PER_SANDBOX: usize = 64;
/// Connections through the relay at once, all sandboxes together.
const RELAY_TOTAL: usize = 4096;
/// The longest a relayed connection lives (a model answer streams for minutes, not hours).
const RELAY_LIFETIME: Duration = Duration::from_secs(3600);

/// Forwards every accepted connection to `target`, within [`RELAY_PER_SANDBOX`] connections
/// per source address and [`RELAY_TOTAL`] in all (a connection past either is closed at once),
/// each for at most [`RELAY_LIFETIME`]: one sandbox cannot use up the relay's descriptors or
/// ports and cut the others off from the edge.
async fn relay(listener: TcpListener, target: String) {
    let total = Arc::new(Semaphore::new(RELAY_TOTAL));
    let per_sandbox: Mutex<HashMap<IpAddr, Arc<Semaphore>>> = Mutex::default();
    loop {
        let (mut inbound, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of descriptors, most likely: wait rather than spin.
                tracing::warn!(error = %err, "the relay cannot accept");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let sandbox = {
            let mut sandboxes = per_sandbox.lock().unwrap_or_else(PoisonError::into_inner);
            // Forget the sandboxes with nothing in flight, so the map stays small.
            sandboxes.retain(|_, slots| slots.available_permits() < RELAY_PER_SANDBOX);
            sandboxes
                .entry(peer.ip())
                .or_insert_with(|| Arc::new(Semaphore::new(RELAY_PER_SANDBOX)))
                .clone()
        };
        let (Ok(own), Ok(all)) = (
            sandbox.try_acquire_owned(),
            total.clone().try_acquire_owned(),
        ) else {
            tracing::warn!(%peer, "the relay refused a connection: too many at once");
            continue;
        };
        let _ = inbound.set_nodelay(true);
        let target = target.clone();
        tokio::spawn(async move {
            let _slots = (own, all);
            match TcpStream::connect(&target).await {
                Ok(mut outbound) => {
                    let _ = outbound.set_nodelay(true);
                    let _ = tokio::time::timeout(
                        RELAY_LIFETIME,
                        tokio::io::copy_bidirectional(&mut inbound, &mut outbound),
                    )
                    .await;
                }
                Err(err) => {
                    tracing::warn!(%peer, target, error = %err, "the relay cannot reach the edge");
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_linux_limits_and_differ_per_network() {
        assert!(bridge_name("warren-sandbox").len() <= 15);
        assert!(chain_name("warren-sandbox").len() <= 28);
        assert_ne!(bridge_name("a"), bridge_name("b"));
    }

    #[test]
    fn the_host_name_servers_are_read_without_loopback_or_ipv6() {
        let conf = "# generated\nnameserver 127.0.0.53\nnameserver 10.0.0.2\nnameserver ::1\nsearch lan\nnameserver 169.254.169.253\n";
        assert_eq!(
            nameservers_in(conf),
            vec![
                Ipv4Addr::new(10, 0, 0, 2),
                Ipv4Addr::new(169, 254, 169, 253)
            ]
        );
    }

    #[test]
    fn the_relay_target_is_the_platform_urls_authority() {
        assert_eq!(
            target_of("http://127.0.0.1:8080").expect("ok"),
            "127.0.0.1:8080"
        );
        assert_eq!(target_of("http://edge/api").expect("ok"), "edge:80");
        assert!(target_of("https://edge").is_err());
    }
}
