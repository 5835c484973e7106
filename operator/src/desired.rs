//! Desired state: what every host of every mesh should look like, computed from a validated
//! inventory and a few facts observed on the hosts (underlay MTU, capabilities, the subnet a
//! host's bridge already carries). Pure: no I/O.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::addressing::{self, IfName, Mac, Marker, Role};
use crate::api::{Encapsulation, GreMesh, LoopPrevention};
use crate::manifest::Inventory;
use crate::observe::HostState;
use crate::validate::check_address_in_subnet_error;

/// MTU assumed for a host whose underlay MTU is not known (not reachable this pass).
pub const FALLBACK_UNDERLAY_MTU: u32 = 1500;

/// Why a mesh or a host cannot get a desired state.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum DesiredError {
    /// Host subnets could not be assigned.
    #[error("mesh {mesh}: {source}")]
    Subnets {
        /// Mesh name.
        mesh: String,
        /// Why.
        source: addressing::SubnetError,
    },
    /// The host's kernel cannot build the mesh's encapsulation.
    #[error(
        "mesh {mesh} needs {encapsulation}, but {reason}; the mesh is left as it is on this host"
    )]
    Unsupported {
        /// Host name.
        host: String,
        /// Mesh name.
        mesh: String,
        /// The missing encapsulation.
        encapsulation: &'static str,
        /// What the probe found.
        reason: String,
    },
}

/// The computed, host-independent layout of one mesh.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeshLayout {
    /// Mesh name.
    pub mesh: String,
    /// The MTU of bridge, tunnels and container interfaces.
    pub mtu: u32,
    /// Subnet of every member host.
    pub subnets: BTreeMap<String, Ipv4Net>,
}

/// What one host should look like for one mesh.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeshOnHost {
    /// Mesh name.
    pub mesh: String,
    /// MTU of everything in the mesh.
    pub mtu: u32,
    /// The mesh bridge.
    pub bridge: BridgeSpec,
    /// gretap tunnels, one per peer (empty for VXLAN meshes).
    pub tunnels: Vec<TunnelSpec>,
    /// The VXLAN device (VXLAN meshes only).
    pub vxlan: Option<VxlanSpec>,
    /// Whether tunnel ports are isolated (split horizon).
    pub isolated: bool,
    /// Container attachments on this host.
    pub attachments: Vec<AttachmentSpec>,
    /// The Docker network over the mesh on this host, when the spec asks for one.
    pub docker_network: Option<DockerNetworkSpec>,
    /// Every peer's gateway on the mesh, pinged across the tunnels as a health check.
    pub peer_gateways: BTreeMap<String, Ipv4Addr>,
}

/// A Docker network bound to the mesh bridge on one host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DockerNetworkSpec {
    /// Network name.
    pub name: addressing::NetworkName,
    /// The whole mesh network (Docker's `--subnet`), so every mesh address is on-link.
    pub subnet: Ipv4Net,
    /// What Docker hands out on this host (`--ip-range`): the upper half of its subnet.
    pub ip_range: Ipv4Net,
    /// The host's gateway on the bridge.
    pub gateway: Ipv4Addr,
    /// The mesh bridge.
    pub bridge: IfName,
    /// The mesh MTU.
    pub mtu: u32,
}

/// The mesh bridge on one host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BridgeSpec {
    /// Interface name.
    pub name: IfName,
    /// Pinned MAC.
    pub mac: Mac,
    /// Gateway address with the mesh network's prefix length.
    pub address: Ipv4Net,
    /// The host's subnet.
    pub subnet: Ipv4Net,
    /// Spanning tree on.
    pub stp: bool,
}

/// A gretap tunnel to one peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TunnelSpec {
    /// Interface name.
    pub name: IfName,
    /// Peer host name.
    pub peer: String,
    /// Local underlay address.
    pub local: Ipv4Addr,
    /// Peer underlay address.
    pub remote: Ipv4Addr,
    /// GRE key.
    pub key: u32,
}

/// The VXLAN device of a mesh on one host: a flood entry per peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VxlanSpec {
    /// Interface name.
    pub name: IfName,
    /// VNI.
    pub vni: u32,
    /// Local underlay address.
    pub local: Ipv4Addr,
    /// UDP destination port.
    pub port: u16,
    /// Peer host name → underlay address.
    pub peers: BTreeMap<String, Ipv4Addr>,
}

/// One container attachment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttachmentSpec {
    /// Attachment name.
    pub name: String,
    /// Container name or ID as the spec gives it (resolved against Docker on every pass).
    pub container: String,
    /// Interface name inside the container.
    pub interface: IfName,
    /// Host-side veth name.
    pub veth: IfName,
    /// Temporary name of the container side before it is moved and renamed.
    pub peer: IfName,
    /// Address with the mesh network's prefix length.
    pub address: Ipv4Net,
    /// MAC.
    pub mac: Mac,
    /// Extra routes: destination and optional next hop.
    pub routes: Vec<(Ipv4Net, Option<Ipv4Addr>)>,
    /// Why it cannot be attached even though the spec is valid (e.g. its address is outside
    /// a subnet assigned this pass).
    pub problem: Option<String>,
}

impl MeshOnHost {
    /// The ownership marker of a role in this mesh.
    pub fn marker(&self, role: Role) -> Marker {
        Marker::new(&self.mesh, role)
    }
}

/// Computes a mesh's MTU and host subnets.
///
/// `states` holds what was observed on reachable hosts; unreachable ones count with
/// [`FALLBACK_UNDERLAY_MTU`] unless `known_mtu` (e.g. from status) says otherwise.
pub fn layout(
    inv: &Inventory,
    name: &str,
    mesh: &GreMesh,
    states: &BTreeMap<String, HostState>,
) -> Result<MeshLayout, DesiredError> {
    let spec = &mesh.spec;
    let overhead = spec.encapsulation_or_default().overhead();
    let mtu = spec.mtu.unwrap_or_else(|| {
        spec.hosts
            .iter()
            .map(|m| {
                let underlay = inv.hosts.get(&m.name).map(|h| h.spec.underlay_address);
                states
                    .get(&m.name)
                    .zip(underlay)
                    .and_then(|(s, addr)| s.underlay_mtu(addr))
                    .or_else(|| last_known_mtu(inv, &m.name))
                    .unwrap_or(FALLBACK_UNDERLAY_MTU)
            })
            .min()
            .unwrap_or(FALLBACK_UNDERLAY_MTU)
            .saturating_sub(overhead)
    });
    let prefix = spec.host_prefix_or_default();
    // A host's previous subnet: what its bridge carries, or (not observed this pass) what the
    // mesh status last recorded.
    let mut previous: BTreeMap<String, Ipv4Net> = mesh
        .status
        .iter()
        .flat_map(|st| {
            st.hosts
                .iter()
                .filter_map(|h| Some((h.name.clone(), h.subnet?)))
        })
        .collect();
    previous.extend(
        states.iter().filter_map(|(host, state)| {
            Some((host.clone(), previous_subnet(state, name, prefix)?))
        }),
    );
    let members: Vec<(String, Option<Ipv4Net>)> = spec
        .hosts
        .iter()
        .map(|m| (m.name.clone(), m.subnet))
        .collect();
    let subnets = addressing::assign_subnets(spec.network, prefix, &members, &previous).map_err(
        |source| DesiredError::Subnets {
            mesh: name.to_owned(),
            source,
        },
    )?;
    Ok(MeshLayout {
        mesh: name.to_owned(),
        mtu,
        subnets,
    })
}

/// Addresses for the attachments of `mesh` on `host` that do not fix one.
///
/// In order of creation (then name), each keeps the address it had — from its status, or
/// read back from its container's interface — while that is still a free, usable address of
/// the host's subnet; the others get the lowest free address after the gateway. Addresses
/// fixed by any attachment of the mesh are never handed out.
pub fn allocate_addresses(
    inv: &Inventory,
    mesh: &str,
    host: &str,
    subnet: Ipv4Net,
    state: &HostState,
) -> BTreeMap<String, Ipv4Addr> {
    let mut taken: std::collections::BTreeSet<Ipv4Addr> = inv
        .attachments
        .values()
        .filter(|a| a.spec.mesh == mesh)
        .filter_map(|a| a.spec.address)
        .collect();
    let docker_range = inv
        .meshes
        .get(mesh)
        .and_then(|m| m.spec.docker_network.as_ref())
        .map(|_| addressing::docker_ip_range(subnet));
    let usable = |a: Ipv4Addr| {
        check_address_in_subnet_error(a, subnet).is_none()
            && !docker_range.is_some_and(|r| r.contains(&a))
    };
    let mut mine: Vec<(&String, &crate::api::ContainerAttachment)> = inv
        .attachments
        .iter()
        .filter(|(_, a)| a.spec.mesh == mesh && a.spec.host == host && a.spec.address.is_none())
        .collect();
    mine.sort_by_key(|(n, a)| (a.metadata.creation_timestamp.as_ref().map(|t| t.0), *n));

    let mut out = BTreeMap::new();
    let mut fresh = Vec::new();
    for (name, att) in mine {
        let from_status = att.status.as_ref().and_then(|s| s.address);
        let marker = Marker::new(mesh, Role::Attach(name.clone()));
        let from_host = state.container(&att.spec.container).and_then(|c| {
            let links = state.container_links.get(&c.id)?;
            let link = links
                .iter()
                .find(|l| l.marker().as_ref() == Some(&marker))?;
            link.addrs
                .iter()
                .map(|a| a.addr())
                .find(|a| subnet.contains(a))
        });
        match from_status
            .into_iter()
            .chain(from_host)
            .find(|a| usable(*a) && !taken.contains(a))
        {
            Some(address) => {
                taken.insert(address);
                out.insert(name.clone(), address);
            }
            None => fresh.push(name.clone()),
        }
    }
    let mut candidates = subnet.hosts().filter(|a| usable(*a) && !taken.contains(a));
    for name in fresh {
        if let Some(address) = candidates.next() {
            out.insert(name, address);
        }
    }
    out
}

/// Gateways of `host`'s peers as far as they are known before any host is observed: the
/// meshes laid out from pinned subnets, the subnets the mesh status recorded and the
/// name-derived slots. The observe round trip health-checks these; a peer whose subnet turns
/// out different once every host was observed is checked in a round trip of its own.
pub fn known_peer_gateways(inv: &Inventory, host: &str) -> Vec<Ipv4Addr> {
    let mut out = std::collections::BTreeSet::new();
    for (name, mesh) in &inv.meshes {
        if !mesh.spec.hosts.iter().any(|m| m.name == host) {
            continue;
        }
        let Ok(guess) = layout(inv, name, mesh, &BTreeMap::new()) else {
            continue;
        };
        out.extend(
            guess
                .subnets
                .iter()
                .filter(|(peer, _)| peer.as_str() != host)
                .map(|(_, subnet)| addressing::gateway(*subnet)),
        );
    }
    out.into_iter().collect()
}

/// The underlay MTU a host's status last recorded.
fn last_known_mtu(inv: &Inventory, host: &str) -> Option<u32> {
    inv.hosts
        .get(host)?
        .status
        .as_ref()?
        .capabilities
        .as_ref()?
        .underlay_mtu
}

/// The subnet a host's bridge for `mesh` already serves, read from its gateway address.
fn previous_subnet(state: &HostState, mesh: &str, prefix: u8) -> Option<Ipv4Net> {
    let bridge = state.links.iter().find(|l| {
        l.marker()
            .is_some_and(|m| m.mesh == mesh && m.role == Role::Bridge)
    })?;
    let gateway = bridge.addrs.first()?.addr();
    let network = u32::from(gateway).checked_sub(1)?;
    Ipv4Net::new(Ipv4Addr::from(network), prefix)
        .ok()
        .map(|n| n.trunc())
}

/// What `host` should look like for mesh `name`, or `None` when it is not a member.
pub fn mesh_on_host(
    inv: &Inventory,
    name: &str,
    mesh: &GreMesh,
    layout: &MeshLayout,
    host: &str,
    state: &HostState,
) -> Result<Option<MeshOnHost>, DesiredError> {
    let spec = &mesh.spec;
    let Some(subnet) = layout.subnets.get(host).copied() else {
        return Ok(None);
    };
    let underlay = |h: &str| inv.hosts.get(h).map(|h| h.spec.underlay_address);
    let Some(local) = underlay(host) else {
        return Ok(None);
    };
    let encapsulation = spec.encapsulation_or_default();
    check_capability(host, name, encapsulation, state)?;

    let net_prefix = spec.network.prefix_len();
    let peers: BTreeMap<String, Ipv4Addr> = spec
        .hosts
        .iter()
        .filter(|m| m.name != host)
        .filter_map(|m| Some((m.name.clone(), underlay(&m.name)?)))
        .collect();
    let bridge_name = match &spec.bridge {
        Some(b) => IfName::new(b).expect("validated"),
        None => addressing::bridge_name(name),
    };
    let bridge = BridgeSpec {
        name: bridge_name,
        mac: addressing::bridge_mac(name, host),
        address: Ipv4Net::new(addressing::gateway(subnet), net_prefix).expect("valid prefix"),
        subnet,
        stp: spec.loop_prevention_or_default() == LoopPrevention::Stp,
    };
    let (tunnels, vxlan) = match encapsulation {
        Encapsulation::Gretap => (
            peers
                .iter()
                .map(|(peer, remote)| TunnelSpec {
                    name: addressing::tunnel_name(name, peer),
                    peer: peer.clone(),
                    local,
                    remote: *remote,
                    key: spec.key,
                })
                .collect(),
            None,
        ),
        Encapsulation::Vxlan => (
            Vec::new(),
            Some(VxlanSpec {
                name: addressing::vxlan_name(name),
                vni: spec.key,
                local,
                port: spec.vxlan_port_or_default(),
                peers,
            }),
        ),
    };
    let allocated = allocate_addresses(inv, name, host, subnet, state);
    let attachments = inv
        .attachments
        .iter()
        .filter(|(_, a)| a.spec.mesh == name && a.spec.host == host)
        .map(|(att_name, a)| {
            let address = a.spec.address.or_else(|| allocated.get(att_name).copied());
            AttachmentSpec {
                name: att_name.clone(),
                container: a.spec.container.clone(),
                interface: IfName::new(a.spec.interface_or_default()).expect("validated"),
                veth: addressing::veth_name(name, att_name),
                peer: addressing::peer_name(name, att_name),
                address: Ipv4Net::new(address.unwrap_or(subnet.network()), net_prefix)
                    .expect("valid prefix"),
                mac: match &a.spec.mac {
                    Some(m) => m.parse().expect("validated"),
                    None => addressing::attachment_mac(name, att_name),
                },
                routes: a.spec.routes.iter().map(|r| (r.to, r.via)).collect(),
                problem: match address {
                    Some(address) => check_address_in_subnet_error(address, subnet).or_else(|| {
                        let range = addressing::docker_ip_range(subnet);
                        (spec.docker_network.is_some() && range.contains(&address)).then(|| {
                            format!("{address} is in {range}, which the mesh's Docker network hands out")
                        })
                    }),
                    None => Some(format!("no free address left in {subnet}")),
                },
            }
        })
        .collect();
    let docker_network = spec.docker_network.as_ref().map(|n| DockerNetworkSpec {
        name: addressing::NetworkName::new(&n.name).expect("validated"),
        subnet: spec.network,
        ip_range: addressing::docker_ip_range(subnet),
        gateway: addressing::gateway(subnet),
        bridge: bridge.name.clone(),
        mtu: layout.mtu,
    });
    let peer_gateways = layout
        .subnets
        .iter()
        .filter(|(h, _)| h.as_str() != host)
        .map(|(h, s)| (h.clone(), addressing::gateway(*s)))
        .collect();
    Ok(Some(MeshOnHost {
        mesh: name.to_owned(),
        mtu: layout.mtu,
        peer_gateways,
        docker_network,
        bridge,
        tunnels,
        vxlan,
        isolated: spec.loop_prevention_or_default() == LoopPrevention::Isolated,
        attachments,
    }))
}

fn check_capability(
    host: &str,
    mesh: &str,
    encapsulation: Encapsulation,
    state: &HostState,
) -> Result<(), DesiredError> {
    let (ok, reason) = match encapsulation {
        Encapsulation::Gretap => (
            state.capabilities.gretap,
            "the host's kernel has no GRE support (ip_gre is neither loaded, built in, nor \
             available as a module); use a kernel with ip_gre or set `encapsulation: vxlan`",
        ),
        Encapsulation::Vxlan => (
            state.capabilities.vxlan,
            "the host's kernel has no VXLAN support (vxlan is neither loaded, built in, nor \
             available as a module)",
        ),
    };
    if ok {
        Ok(())
    } else {
        Err(DesiredError::Unsupported {
            host: host.to_owned(),
            mesh: mesh.to_owned(),
            encapsulation: encapsulation.as_str(),
            reason: reason.to_owned(),
        })
    }
}

/// Every hash-derived device name gremesh could give a device of `meshes` on any host, with
/// the marker it would carry: bridge and VXLAN device of each mesh, a tunnel towards every
/// known host, both veth ends of every known attachment. Used to adopt devices whose creating
/// pass was interrupted before it could mark them. Bridges named by `spec.bridge` are not
/// included: such a name may belong to an administrator's own bridge.
pub fn claimable<'a>(
    inv: &Inventory,
    meshes: impl IntoIterator<Item = &'a String>,
) -> BTreeMap<String, Marker> {
    let mut out = BTreeMap::new();
    for mesh in meshes {
        if inv.meshes.get(mesh).is_none_or(|m| m.spec.bridge.is_none()) {
            out.insert(
                addressing::bridge_name(mesh).to_string(),
                Marker::new(mesh, Role::Bridge),
            );
        }
        out.insert(
            addressing::vxlan_name(mesh).to_string(),
            Marker::new(mesh, Role::Vxlan),
        );
        for host in inv.hosts.keys() {
            out.insert(
                addressing::tunnel_name(mesh, host).to_string(),
                Marker::new(mesh, Role::Tunnel(host.clone())),
            );
        }
        for (name, att) in &inv.attachments {
            if &att.spec.mesh == mesh {
                out.insert(
                    addressing::veth_name(mesh, name).to_string(),
                    Marker::new(mesh, Role::Veth(name.clone())),
                );
                out.insert(
                    addressing::peer_name(mesh, name).to_string(),
                    Marker::new(mesh, Role::Attach(name.clone())),
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const SPEC: &str = r#"
apiVersion: gremesh.io/v1alpha1
kind: DockerHost
metadata: {name: host-a}
spec: {address: 10.200.0.11, sshKeySecretRef: {name: k}, hostKey: "ssh-ed25519 AAAA", underlayAddress: 10.200.0.11}
---
apiVersion: gremesh.io/v1alpha1
kind: GreMesh
metadata: {name: m1}
spec: {hosts: [{name: host-a, subnet: 10.10.1.0/24}], encapsulation: vxlan, key: 1, network: 10.10.0.0/16}
---
apiVersion: gremesh.io/v1alpha1
kind: ContainerAttachment
metadata: {name: fixed}
spec: {mesh: m1, host: host-a, container: c0, address: 10.10.1.2}
---
apiVersion: gremesh.io/v1alpha1
kind: ContainerAttachment
metadata: {name: b-second, creationTimestamp: "2026-01-02T00:00:00Z"}
spec: {mesh: m1, host: host-a, container: c2}
---
apiVersion: gremesh.io/v1alpha1
kind: ContainerAttachment
metadata: {name: z-first, creationTimestamp: "2026-01-01T00:00:00Z"}
spec: {mesh: m1, host: host-a, container: c1}
"#;

    fn inventory() -> Inventory {
        let mut inv = Inventory::default();
        inv.add_yaml(Path::new("t.yaml"), SPEC).unwrap();
        inv
    }

    #[test]
    fn allocation_skips_gateway_and_fixed_addresses_in_creation_order() {
        let inv = inventory();
        let got = allocate_addresses(
            &inv,
            "m1",
            "host-a",
            "10.10.1.0/24".parse().unwrap(),
            &HostState::default(),
        );
        assert_eq!(got["z-first"], "10.10.1.3".parse::<Ipv4Addr>().unwrap());
        assert_eq!(got["b-second"], "10.10.1.4".parse::<Ipv4Addr>().unwrap());
    }

    #[test]
    fn allocation_keeps_the_address_recorded_in_status() {
        let mut inv = inventory();
        inv.attachments.get_mut("b-second").unwrap().status =
            Some(crate::api::ContainerAttachmentStatus {
                address: Some("10.10.1.3".parse().unwrap()),
                ..Default::default()
            });
        let got = allocate_addresses(
            &inv,
            "m1",
            "host-a",
            "10.10.1.0/24".parse().unwrap(),
            &HostState::default(),
        );
        assert_eq!(got["b-second"], "10.10.1.3".parse::<Ipv4Addr>().unwrap());
        assert_eq!(got["z-first"], "10.10.1.4".parse::<Ipv4Addr>().unwrap());
    }

    #[test]
    fn peer_gateways_known_before_observing_include_unpinned_peers() {
        let mut inv = inventory();
        let extra = "apiVersion: gremesh.io/v1alpha1\nkind: DockerHost\nmetadata: {name: host-b}\n\
                     spec: {address: 10.200.0.12, sshKeySecretRef: {name: k}, \
                     hostKey: \"ssh-ed25519 AAAA\", underlayAddress: 10.200.0.12}\n";
        inv.add_yaml(Path::new("b.yaml"), extra).unwrap();
        let m1 = inv.meshes.get_mut("m1").unwrap();
        m1.spec.hosts.push(crate::api::mesh::MeshMember {
            name: "host-b".into(),
            subnet: None,
        });
        let observed = layout(&inv, "m1", &inv.meshes["m1"], &BTreeMap::new()).unwrap();
        let b_gateway = addressing::gateway(observed.subnets["host-b"]);
        assert_eq!(known_peer_gateways(&inv, "host-a"), vec![b_gateway]);
        assert_eq!(
            known_peer_gateways(&inv, "host-b"),
            vec!["10.10.1.1".parse::<Ipv4Addr>().unwrap()]
        );
    }
}
