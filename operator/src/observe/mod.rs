//! Observe: what a host looks like right now, read in one SSH round trip.
//!
//! [`PROBE`] is a fixed, read-only shell script (it takes no input at all) whose output is
//! split into sections and parsed into a typed [`HostState`]. The apply script ends with the
//! same probe, so the state after a change comes back in the same round trip.
//!
//! Besides links, it reads the host's main routing table (so a mesh network that overlaps the
//! host's own networks is refused), each container's Docker network mode and the identity of
//! every network namespace (`readlink /proc/PID/ns/net`, compared with the probe's own), so a
//! container that shares the host's namespace (`--network host`) or another container's
//! (`--network container:…`) is recognised and left alone.

mod parse;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::addressing::Marker;
use crate::api::host::HostCapabilities;

pub use parse::{parse_probe, ProbeError};

/// The probe: read-only commands printing JSON sections. It takes no arguments and reads no
/// input, so nothing from a spec can reach it.
pub const PROBE: &str = r#"
echo '@@links'
ip -j -d addr show
echo '@@host-routes'
ip -j route show table main 2>/dev/null || echo '[]'
echo "@@host-netns $(readlink /proc/$$/ns/net 2>/dev/null)"
echo '@@gretap'
if ip link show gretap0 >/dev/null 2>&1 || [ -d /sys/module/ip_gre ] || modinfo ip_gre >/dev/null 2>&1 \
  || { [ -r /proc/config.gz ] && zcat /proc/config.gz | grep -Eq '^CONFIG_NET_IPGRE=(y|m)'; }; then echo yes; else echo no; fi
echo '@@vxlan'
if [ -d /sys/module/vxlan ] || modinfo vxlan >/dev/null 2>&1 \
  || { [ -r /proc/config.gz ] && zcat /proc/config.gz | grep -Eq '^CONFIG_VXLAN=(y|m)'; }; then echo yes; else echo no; fi
ip -o link show type vxlan | while IFS=': ' read -r _ dev _; do
  case $dev in gx-*) echo "@@fdb $dev"; bridge -j fdb show dev "$dev";; esac
done
echo '@@docker'
docker version --format '{{.Server.Version}}' 2>/dev/null || true
echo '@@docker-networks'
nets=$(docker network ls -q --filter label=gremesh.io/mesh 2>/dev/null)
if [ -n "$nets" ]; then docker network inspect $nets 2>/dev/null || echo '[]'; else echo '[]'; fi
echo '@@docker-network-names'
docker network ls --format '{{.Name}}' 2>/dev/null || true
echo '@@containers'
ids=$(docker ps -aq --no-trunc 2>/dev/null)
[ -z "$ids" ] || docker inspect --format \
  '{{.Id}} {{.Name}} {{.State.Running}} {{.State.Pid}} {{.HostConfig.NetworkMode}}' $ids
docker inspect --format '{{.Id}} {{.State.Pid}}' $(docker ps -q --no-trunc 2>/dev/null) 2>/dev/null |
while read -r id pid; do
  [ "$pid" -gt 0 ] 2>/dev/null || continue
  echo "@@netns-id $id $(readlink /proc/$pid/ns/net 2>/dev/null)"
  echo "@@netns $id"
  nsenter -t "$pid" -n ip -j -d addr show 2>/dev/null || echo '[]'
  echo "@@routes $id"
  nsenter -t "$pid" -n ip -j route show 2>/dev/null || echo '[]'
done
echo '@@end'
"#;

/// The probe followed by a health check: one ping across the mesh to each given peer gateway
/// (all in parallel, up to `attempts` tries of one second each). Its only inputs are
/// addresses, rendered from typed values. A host without `ping` reports the check as
/// unavailable and every tunnel is then judged by its device state alone.
pub fn probe_with_health(gateways: &[Ipv4Addr], attempts: u8) -> String {
    let mut script = String::from(PROBE);
    if gateways.is_empty() {
        return script;
    }
    script.push_str("if command -v ping >/dev/null 2>&1; then\n");
    for gw in gateways {
        script.push_str(&format!(
            "  ( n=0; while [ $n -lt {attempts} ]; do ping -c 1 -W 1 -q {gw} >/dev/null 2>&1 && {{ echo '@@health {gw} ok'; exit 0; }}; n=$((n+1)); done; echo '@@health {gw} fail' ) &\n"
        ));
    }
    script.push_str("  wait\nfi\necho '@@health-end'\n");
    script
}

/// Everything observed on one host.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HostState {
    /// Links of the host's own network namespace.
    pub links: Vec<Link>,
    /// IPv4 routes of the host's main table.
    pub routes: Vec<RouteEntry>,
    /// Identity of the host's network namespace (`net:[inode]`), when it could be read.
    pub netns: Option<String>,
    /// Forwarding entries of gremesh VXLAN devices, by device name.
    pub fdb: BTreeMap<String, Vec<FdbEntry>>,
    /// All containers, running or not.
    pub containers: Vec<Container>,
    /// Links inside each running container's namespace, by container ID.
    pub container_links: BTreeMap<String, Vec<Link>>,
    /// IPv4 routes inside each running container's namespace, by container ID.
    pub container_routes: BTreeMap<String, Vec<RouteEntry>>,
    /// Docker networks labelled `gremesh.io/mesh`.
    pub docker_networks: Vec<DockerNetworkState>,
    /// Names of all Docker networks (to spot foreign ones in the way).
    pub docker_network_names: Vec<String>,
    /// Result of the health check per peer gateway: answered across the mesh or not (absent:
    /// not checked).
    pub health: BTreeMap<Ipv4Addr, bool>,
    /// What the host can do.
    pub capabilities: HostCapabilities,
}

/// A gremesh-labelled Docker network as `docker network inspect` reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DockerNetworkState {
    /// Network name.
    pub name: String,
    /// Value of its `gremesh.io/mesh` label.
    pub mesh: String,
    /// IPAM subnet.
    pub subnet: Option<Ipv4Net>,
    /// IPAM range.
    pub ip_range: Option<Ipv4Net>,
    /// IPAM gateway.
    pub gateway: Option<Ipv4Addr>,
    /// The bridge it uses.
    pub bridge: Option<String>,
    /// The MTU option.
    pub mtu: Option<u32>,
    /// Containers connected to it.
    pub containers: usize,
}

/// One IPv4 route as `ip -j route show` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteEntry {
    /// Destination: `default` or a CIDR (a bare address means /32).
    pub dst: String,
    /// Next hop.
    pub gateway: Option<Ipv4Addr>,
    /// Output device.
    pub dev: Option<String>,
    /// Routing protocol (`kernel` for routes the kernel derives from addresses).
    pub protocol: Option<String>,
}

impl RouteEntry {
    /// The destination as a network (`default` is `0.0.0.0/0`, a bare address a /32); `None`
    /// for a destination that is not IPv4.
    pub fn destination(&self) -> Option<Ipv4Net> {
        if self.dst == "default" {
            return Some(Ipv4Net::default());
        }
        self.dst
            .parse()
            .ok()
            .or_else(|| self.dst.parse::<Ipv4Addr>().ok().map(Ipv4Net::from))
    }

    /// Whether this is the route the kernel derives from one of `link`'s addresses (the
    /// connected route of its network, through it, without a next hop).
    pub fn is_connected_of(&self, link: &Link) -> bool {
        self.dev.as_deref() == Some(link.name.as_str())
            && self.gateway.is_none()
            && self
                .destination()
                .is_some_and(|d| link.addrs.iter().any(|a| a.trunc() == d))
    }
}

/// The form `ip route` prints a destination in: `default`, a bare address for a /32, else a
/// CIDR.
pub fn route_dst(to: Ipv4Net) -> String {
    match to.prefix_len() {
        0 => "default".to_owned(),
        32 => to.addr().to_string(),
        _ => to.trunc().to_string(),
    }
}

/// One network interface as `ip -j -d addr show` reports it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Link {
    /// Interface name.
    pub name: String,
    /// `info_kind`: `bridge`, `veth`, `vxlan`, `gretap`, ... (`None` for plain devices).
    pub kind: Option<String>,
    /// MTU.
    pub mtu: u32,
    /// MAC address, lowercase.
    pub mac: Option<String>,
    /// Interface alias (gremesh's ownership marker lives here).
    pub alias: Option<String>,
    /// Name of the bridge this port belongs to.
    pub master: Option<String>,
    /// Administratively up.
    pub up: bool,
    /// Operationally usable (`operstate` UP or UNKNOWN for tunnels).
    pub oper_up: bool,
    /// IPv4 addresses with prefix length.
    pub addrs: Vec<Ipv4Net>,
    /// Bridge port `isolated` flag, when this is a bridge port.
    pub isolated: Option<bool>,
    /// Bridge `stp_state` != 0, when this is a bridge.
    pub stp: Option<bool>,
    /// VXLAN parameters, when this is a VXLAN device.
    pub vxlan: Option<VxlanInfo>,
    /// GRE parameters, when this is a gretap device.
    pub gre: Option<GreInfo>,
}

impl Link {
    /// The ownership marker, when the device is gremesh's.
    pub fn marker(&self) -> Option<Marker> {
        self.alias.as_deref().and_then(Marker::parse)
    }
}

/// VXLAN device parameters that cannot be changed in place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VxlanInfo {
    /// VNI.
    pub id: u32,
    /// Local tunnel address.
    pub local: Option<Ipv4Addr>,
    /// UDP destination port.
    pub port: u16,
}

/// gretap device parameters that cannot be changed in place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GreInfo {
    /// Local tunnel address.
    pub local: Option<Ipv4Addr>,
    /// Remote tunnel address.
    pub remote: Option<Ipv4Addr>,
    /// Input key (None when unkeyed).
    pub ikey: Option<u32>,
    /// Output key (None when unkeyed).
    pub okey: Option<u32>,
}

/// A forwarding database entry of a VXLAN device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FdbEntry {
    /// MAC address, lowercase.
    pub mac: String,
    /// Remote VTEP, when the entry has one.
    pub dst: Option<Ipv4Addr>,
}

/// A container as Docker reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Container {
    /// Full 64-hex ID.
    pub id: String,
    /// Name without the leading `/`.
    pub name: String,
    /// Whether it is running.
    pub running: bool,
    /// PID of its init process (0 when not running).
    pub pid: u32,
    /// Docker's `HostConfig.NetworkMode` (`none`, `bridge`, `host`, `container:<id>`, a
    /// network name), empty when not reported.
    pub network_mode: String,
    /// Identity of its network namespace (`net:[inode]`), when running and readable.
    pub netns: Option<String>,
}

/// Why a container's network namespace is not its own, so gremesh must not attach it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SharedNamespace {
    /// It runs in the host's own namespace (`--network host`).
    Host,
    /// It joined another container's namespace (`--network container:<id>`).
    Container(String),
}

impl std::fmt::Display for SharedNamespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SharedNamespace::Host => {
                f.write_str("uses the host's network namespace (--network host)")
            }
            SharedNamespace::Container(other) => write!(
                f,
                "uses the network namespace of container {other} (--network container:{other})"
            ),
        }
    }
}

impl HostState {
    /// The link of the host namespace with that name.
    pub fn link(&self, name: &str) -> Option<&Link> {
        self.links.iter().find(|l| l.name == name)
    }

    /// Finds a container by name or by (a prefix of at least 12 characters of) its ID.
    pub fn container(&self, reference: &str) -> Option<&Container> {
        self.containers
            .iter()
            .find(|c| c.name == reference)
            .or_else(|| {
                if reference.len() >= 12 && reference.bytes().all(|b| b.is_ascii_hexdigit()) {
                    self.containers.iter().find(|c| c.id.starts_with(reference))
                } else {
                    None
                }
            })
    }

    /// Whether `container`'s network namespace belongs to something else: the host (by
    /// Docker's network mode, or because it is the very namespace the probe ran in) or
    /// another container.
    pub fn shared_namespace(&self, container: &Container) -> Option<SharedNamespace> {
        let mode = container.network_mode.as_str();
        if mode == "host" {
            return Some(SharedNamespace::Host);
        }
        if let Some(other) = mode.strip_prefix("container:") {
            let name = self
                .containers
                .iter()
                .find(|c| c.id == other || (other.len() >= 12 && c.id.starts_with(other)))
                .map(|c| c.name.clone())
                .unwrap_or_else(|| other.chars().take(12).collect());
            return Some(SharedNamespace::Container(name));
        }
        match (&container.netns, &self.netns) {
            (Some(theirs), Some(ours)) if theirs == ours => Some(SharedNamespace::Host),
            _ => None,
        }
    }

    /// MTU of the device carrying `address`, the host's underlay MTU.
    pub fn underlay_mtu(&self, address: Ipv4Addr) -> Option<u32> {
        self.links
            .iter()
            .find(|l| l.addrs.iter().any(|a| a.addr() == address))
            .map(|l| l.mtu)
    }
}
