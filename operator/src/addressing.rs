//! Addressing: host subnets, gateways, MAC addresses, interface names and ownership markers.
//!
//! Everything here is deterministic: the same names always give the same MACs and interface
//! names, so a pass with empty caches (a restarted operator, a fresh `gremesh apply`) reaches
//! the same answers as the pass before it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use ipnet::Ipv4Net;
use sha2::{Digest, Sha256};

/// Prefix of every ownership marker gremesh writes into an interface alias.
pub const MARKER_PREFIX: &str = "gremesh";

/// A Linux interface name checked to be at most 15 bytes of `[A-Za-z0-9_.-]`, not starting
/// with `-` or `.`: safe as an argument to `ip` and to a shell.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IfName(String);

/// An interface name that does not fit the rules.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not a valid interface name (1-15 characters of A-Z a-z 0-9 _ . -, starting with a letter or digit; not `all` or `default`, which the kernel reserves)")]
pub struct BadIfName(pub String);

/// Names the kernel gives a meaning of their own (`/proc/sys/net/ipv4/conf/all`, `…/default`):
/// `ip link add` refuses them.
const RESERVED_IFNAMES: [&str; 2] = ["all", "default"];

impl IfName {
    /// Checks and wraps a name.
    pub fn new(name: &str) -> Result<Self, BadIfName> {
        let ok = (1..=15).contains(&name.len())
            && !RESERVED_IFNAMES.contains(&name)
            && name.as_bytes()[0].is_ascii_alphanumeric()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if ok {
            Ok(Self(name.to_owned()))
        } else {
            Err(BadIfName(name.to_owned()))
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IfName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A 48-bit Ethernet address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// A locally administered unicast MAC derived from the given parts.
    pub fn derive(parts: &[&str]) -> Self {
        let digest = hash(parts);
        let mut bytes = [0u8; 6];
        bytes.copy_from_slice(&digest[..6]);
        bytes[0] = (bytes[0] & 0xfe) | 0x02;
        Mac(bytes)
    }

    /// Whether this is a unicast address (the group bit is clear) and not all zeros.
    pub fn is_unicast(&self) -> bool {
        self.0[0] & 1 == 0 && self.0 != [0; 6]
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl FromStr for Mac {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut bytes = [0u8; 6];
        let mut parts = s.split(':');
        for byte in bytes.iter_mut() {
            let part = parts
                .next()
                .ok_or_else(|| format!("{s:?} is not a MAC address"))?;
            if part.len() != 2 {
                return Err(format!("{s:?} is not a MAC address"));
            }
            *byte =
                u8::from_str_radix(part, 16).map_err(|_| format!("{s:?} is not a MAC address"))?;
        }
        if parts.next().is_some() {
            return Err(format!("{s:?} is not a MAC address"));
        }
        Ok(Mac(bytes))
    }
}

/// What a gremesh-owned interface is for; written into its alias as the ownership marker.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// The mesh bridge.
    Bridge,
    /// A gretap tunnel to the named peer host.
    Tunnel(String),
    /// The mesh's VXLAN device (one per host, a flood entry per peer).
    Vxlan,
    /// Host side of an attachment's veth.
    Veth(String),
    /// Container side of an attachment's veth.
    Attach(String),
}

/// An ownership marker: which mesh and role a device belongs to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Marker {
    /// Mesh name.
    pub mesh: String,
    /// Role of the device in the mesh.
    pub role: Role,
}

impl Marker {
    /// Builds a marker. Mesh and detail names are Kubernetes names (validated), so they hold
    /// no `:`.
    pub fn new(mesh: &str, role: Role) -> Self {
        Self {
            mesh: mesh.to_owned(),
            role,
        }
    }

    /// Parses an interface alias; `None` when the device is not gremesh's.
    pub fn parse(alias: &str) -> Option<Self> {
        let mut parts = alias.split(':');
        if parts.next()? != MARKER_PREFIX {
            return None;
        }
        let mesh = parts.next()?.to_owned();
        let role = match (parts.next()?, parts.next()) {
            ("bridge", None) => Role::Bridge,
            ("vxlan", None) => Role::Vxlan,
            ("tunnel", Some(peer)) => Role::Tunnel(peer.to_owned()),
            ("veth", Some(name)) => Role::Veth(name.to_owned()),
            ("attach", Some(name)) => Role::Attach(name.to_owned()),
            _ => return None,
        };
        if parts.next().is_some() || mesh.is_empty() {
            return None;
        }
        Some(Self { mesh, role })
    }
}

impl fmt::Display for Marker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mesh = &self.mesh;
        match &self.role {
            Role::Bridge => write!(f, "{MARKER_PREFIX}:{mesh}:bridge"),
            Role::Vxlan => write!(f, "{MARKER_PREFIX}:{mesh}:vxlan"),
            Role::Tunnel(peer) => write!(f, "{MARKER_PREFIX}:{mesh}:tunnel:{peer}"),
            Role::Veth(name) => write!(f, "{MARKER_PREFIX}:{mesh}:veth:{name}"),
            Role::Attach(name) => write!(f, "{MARKER_PREFIX}:{mesh}:attach:{name}"),
        }
    }
}

fn hash(parts: &[&str]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    hasher.finalize().into()
}

fn short_name(prefix: &str, parts: &[&str]) -> IfName {
    let digest = hash(parts);
    let hex: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    IfName(format!("{prefix}{hex}"))
}

/// Default bridge name of a mesh: `gm-` and 8 hex digits of the mesh name's hash.
pub fn bridge_name(mesh: &str) -> IfName {
    short_name("gm-", &["bridge", mesh])
}

/// Name of the gretap tunnel to `peer` in `mesh` (same on every host that has one).
pub fn tunnel_name(mesh: &str, peer: &str) -> IfName {
    short_name("gt-", &["tunnel", mesh, peer])
}

/// Name of the mesh's VXLAN device.
pub fn vxlan_name(mesh: &str) -> IfName {
    short_name("gx-", &["vxlan", mesh])
}

/// Host-side name of an attachment's veth.
pub fn veth_name(mesh: &str, attachment: &str) -> IfName {
    short_name("gv-", &["veth", mesh, attachment])
}

/// Temporary name of the container side of the veth, before it is renamed inside the
/// container's namespace.
pub fn peer_name(mesh: &str, attachment: &str) -> IfName {
    short_name("gc-", &["peer", mesh, attachment])
}

/// MAC of a mesh's bridge on one host (pinned so ports coming and going never change it).
pub fn bridge_mac(mesh: &str, host: &str) -> Mac {
    Mac::derive(&["bridge-mac", mesh, host])
}

/// Default MAC of an attachment's container interface.
pub fn attachment_mac(mesh: &str, attachment: &str) -> Mac {
    Mac::derive(&["attachment-mac", mesh, attachment])
}

/// The gateway of a host subnet: its first usable address.
pub fn gateway(subnet: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(subnet.network()) + 1)
}

/// The part of a host subnet that Docker's IPAM hands out when the mesh has a Docker network:
/// its upper half (attachments get addresses from the lower half).
pub fn docker_ip_range(subnet: Ipv4Net) -> Ipv4Net {
    let half = subnet.prefix_len() + 1;
    let size = 1u32 << (32 - half);
    Ipv4Net::new(Ipv4Addr::from(u32::from(subnet.network()) + size), half)
        .expect("prefix at most /31")
}

/// A Docker network name checked to be 1–63 characters of `[A-Za-z0-9_.-]`, starting with a
/// letter or digit: safe as a `docker` argument and in a shell.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NetworkName(String);

impl NetworkName {
    /// Checks and wraps a name.
    pub fn new(name: &str) -> Option<Self> {
        let ok = (1..=63).contains(&name.len())
            && name.as_bytes()[0].is_ascii_alphanumeric()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        ok.then(|| Self(name.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NetworkName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A mesh name checked to be an RFC 1123 label (what the CRD's `metadata.name` allows here).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MeshName(String);

impl MeshName {
    /// Checks and wraps a name.
    pub fn new(name: &str) -> Option<Self> {
        let b = name.as_bytes();
        let ok = (1..=63).contains(&b.len())
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-');
        ok.then(|| Self(name.to_owned()))
    }
}

impl fmt::Display for MeshName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why host subnets could not be assigned.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SubnetError {
    /// The network has fewer subnets of the host prefix than there are hosts.
    #[error(
        "network {network} has room for {room} subnets of /{prefix}, but {hosts} hosts need one"
    )]
    Full {
        /// The mesh network.
        network: Ipv4Net,
        /// Host prefix length.
        prefix: u8,
        /// How many subnets fit.
        room: u64,
        /// How many hosts need one.
        hosts: usize,
    },
}

/// Assigns every host a subnet of `network` with prefix `prefix`.
///
/// Pinned subnets are kept; then each host keeps the subnet it had before (`previous`, from
/// status or from what its bridge carries) if still free and valid; remaining hosts start at a
/// slot derived from their name's hash and take the next free one. A host's subnet therefore
/// does not move when other hosts join or leave. `pinned` values are assumed validated.
pub fn assign_subnets(
    network: Ipv4Net,
    prefix: u8,
    hosts: &[(String, Option<Ipv4Net>)],
    previous: &BTreeMap<String, Ipv4Net>,
) -> Result<BTreeMap<String, Ipv4Net>, SubnetError> {
    let network = network.trunc();
    let room: u64 = 1u64 << (prefix - network.prefix_len()).min(32);
    if (hosts.len() as u64) > room {
        return Err(SubnetError::Full {
            network,
            prefix,
            room,
            hosts: hosts.len(),
        });
    }
    let slot_of = |subnet: Ipv4Net| -> Option<u64> {
        if subnet.prefix_len() != prefix || !network.contains(&subnet) {
            return None;
        }
        Some(u64::from(
            (u32::from(subnet.network()) - u32::from(network.network())) >> (32 - prefix),
        ))
    };
    let subnet_at = |slot: u64| -> Ipv4Net {
        let base = u32::from(network.network()) + ((slot as u32) << (32 - prefix));
        Ipv4Net::new(Ipv4Addr::from(base), prefix).expect("prefix checked by validation")
    };

    let mut taken = BTreeSet::new();
    let mut out = BTreeMap::new();
    for (name, pinned) in hosts {
        if let Some(slot) = pinned.and_then(slot_of) {
            taken.insert(slot);
            out.insert(name.clone(), subnet_at(slot));
        }
    }
    for (name, pinned) in hosts {
        if pinned.is_some() {
            continue;
        }
        if let Some(slot) = previous.get(name).copied().and_then(slot_of) {
            if taken.insert(slot) {
                out.insert(name.clone(), subnet_at(slot));
            }
        }
    }
    for (name, _) in hosts {
        if out.contains_key(name) {
            continue;
        }
        let digest = hash(&["subnet", name]);
        let start = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes")) % room;
        let slot = (0..room)
            .map(|i| (start + i) % room)
            .find(|slot| !taken.contains(slot))
            .expect("room checked above");
        taken.insert(slot);
        out.insert(name.clone(), subnet_at(slot));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn members(names: &[&str]) -> Vec<(String, Option<Ipv4Net>)> {
        names.iter().map(|n| (n.to_string(), None)).collect()
    }

    #[test]
    fn names_fit_linux_limit_and_differ_by_role_and_mesh() {
        let names = [
            bridge_name("m1"),
            bridge_name("m2"),
            tunnel_name("m1", "host-b"),
            tunnel_name("m2", "host-b"),
            vxlan_name("m1"),
            veth_name("m1", "web-a"),
            peer_name("m1", "web-a"),
        ];
        let set: BTreeSet<_> = names.iter().collect();
        assert_eq!(set.len(), names.len());
        assert!(names.iter().all(|n| n.as_str().len() <= 15));
    }

    #[test]
    fn marker_round_trips_and_rejects_foreign_aliases() {
        for role in [
            Role::Bridge,
            Role::Vxlan,
            Role::Tunnel("b".into()),
            Role::Veth("w".into()),
        ] {
            let m = Marker::new("m1", role);
            assert_eq!(Marker::parse(&m.to_string()), Some(m));
        }
        assert_eq!(Marker::parse("docker bridge"), None);
        assert_eq!(Marker::parse("gremesh:m1:bogus"), None);
        assert_eq!(Marker::parse("gremesh::bridge"), None);
    }

    #[test]
    fn macs_are_local_unicast_and_parse_back() {
        let mac = attachment_mac("m1", "web-a");
        assert!(mac.is_unicast());
        assert_eq!(mac.0[0] & 2, 2);
        assert_eq!(mac.to_string().parse::<Mac>().unwrap(), mac);
        assert!("01:00:5e:00:00:01"
            .parse::<Mac>()
            .map(|m| !m.is_unicast())
            .unwrap());
        assert!("zz:00:00:00:00:00".parse::<Mac>().is_err());
    }

    #[test]
    fn ifname_rejects_unsafe_names() {
        for bad in [
            "",
            "-x",
            ".x",
            "a b",
            "a;b",
            "sixteen-chars-xx",
            "é",
            "a\nb",
            "$(x)",
        ] {
            assert!(IfName::new(bad).is_err(), "{bad:?}");
        }
        assert!(IfName::new("eth1").is_ok());
    }

    #[test]
    fn pinned_subnet_is_kept_and_others_avoid_it() {
        let mut hosts = members(&["a", "b", "c"]);
        hosts[1].1 = Some(net("10.10.7.0/24"));
        let got = assign_subnets(net("10.10.0.0/16"), 24, &hosts, &BTreeMap::new()).unwrap();
        assert_eq!(got["b"], net("10.10.7.0/24"));
        let set: BTreeSet<_> = got.values().collect();
        assert_eq!(set.len(), 3);
    }

    #[test]
    fn full_network_is_an_error() {
        let err = assign_subnets(
            net("10.0.0.0/23"),
            24,
            &members(&["a", "b", "c"]),
            &BTreeMap::new(),
        );
        assert!(matches!(err, Err(SubnetError::Full { room: 2, .. })));
    }

    proptest! {
        /// Adding or removing other hosts never moves a host whose previous subnet is known,
        /// and every assignment is inside the network, of the right size and unique.
        #[test]
        fn assignments_are_stable_and_disjoint(
            names in proptest::collection::btree_set("[a-z]{1,6}", 1..20),
            extra in proptest::collection::btree_set("[a-z]{7,8}", 0..10),
        ) {
            let network = net("10.10.0.0/16");
            let base: Vec<_> = names.iter().map(|n| (n.clone(), None)).collect();
            let first = assign_subnets(network, 24, &base, &BTreeMap::new()).unwrap();
            let mut more = base.clone();
            more.extend(extra.iter().map(|n| (n.clone(), None)));
            let second = assign_subnets(network, 24, &more, &first).unwrap();
            for (name, subnet) in &first {
                prop_assert_eq!(second[name], *subnet);
            }
            let unique: BTreeSet<_> = second.values().collect();
            prop_assert_eq!(unique.len(), second.len());
            prop_assert!(second.values().all(|s| network.contains(s) && s.prefix_len() == 24));
        }
    }
}
