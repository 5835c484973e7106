//! GreMesh rules: each mesh's own fields and addressing (network, host prefix, pinned
//! subnets), and what meshes sharing a host must not have in common (bridge name, network,
//! Docker network name, VXLAN VNI and port).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::addressing::{self, IfName};
use crate::api::mesh::DEFAULT_HOST_PREFIX;
use crate::api::{DockerHost, Encapsulation, GreMesh};
use crate::manifest::Inventory;

use super::{printable, Checker};

/// Checks one GreMesh: its fields, that its hosts are known, and its addressing.
pub(super) fn check_mesh(c: &mut Checker, inv: &Inventory, name: &str, mesh: &GreMesh) {
    const K: &str = "GreMesh";
    let spec = &mesh.spec;
    c.object_name(K, name);
    if spec.hosts.is_empty() {
        c.push(K, name, "spec.hosts", "a mesh needs at least one host");
    }
    let mut seen = BTreeSet::new();
    for (i, member) in spec.hosts.iter().enumerate() {
        let field = format!("spec.hosts[{i}].name");
        if !seen.insert(member.name.as_str()) {
            c.push(
                K,
                name,
                field,
                format!("host {} is listed twice", member.name),
            );
        } else if let Some(host) = inv.hosts.get(&member.name) {
            check_network_spares_host(c, name, mesh, &member.name, host);
        } else {
            c.push(
                K,
                name,
                field,
                format!("unknown DockerHost {}", printable(&member.name)),
            );
        }
    }
    if !(1..=16_777_215).contains(&spec.key) {
        c.push(
            K,
            name,
            "spec.key",
            format!("{} is outside 1..16777215", spec.key),
        );
    }
    if let Some(mtu) = spec.mtu {
        if !(576..=9000).contains(&mtu) {
            c.push(K, name, "spec.mtu", format!("{mtu} is outside 576..9000"));
        }
    }
    if let Some(bridge) = &spec.bridge {
        if let Err(e) = IfName::new(bridge) {
            c.push(K, name, "spec.bridge", e.to_string());
        }
    }
    if spec.vxlan_port == Some(0) {
        c.push(K, name, "spec.vxlanPort", "must be between 1 and 65535");
    }
    if let Some(net) = &spec.docker_network {
        if addressing::NetworkName::new(&net.name).is_none() {
            c.push(
                K,
                name,
                "spec.dockerNetwork.name",
                format!(
                    "{} is not a Docker network name (1-63 characters of A-Z a-z 0-9 _ . -)",
                    printable(&net.name)
                ),
            );
        }
    }
    check_mesh_network(c, name, mesh);
}

/// The mesh network is on-link on every member's bridge: if it held a member's underlay or
/// SSH address, the bridge's route would take that host's own traffic (and gremesh's SSH
/// connection) into the mesh.
fn check_network_spares_host(
    c: &mut Checker,
    name: &str,
    mesh: &GreMesh,
    host_name: &str,
    host: &DockerHost,
) {
    let network = mesh.spec.network;
    let ssh = host.spec.address.parse::<Ipv4Addr>().ok();
    for (what, address) in [
        ("underlay address", Some(host.spec.underlay_address)),
        ("SSH address", ssh),
    ] {
        if let Some(address) = address.filter(|a| network.contains(a)) {
            c.push(
                "GreMesh",
                name,
                "spec.network",
                format!(
                    "{network} contains {address}, the {what} of host {host_name}; the mesh \
                     network must not overlap the hosts' own networks"
                ),
            );
            return;
        }
    }
}

fn check_mesh_network(c: &mut Checker, name: &str, mesh: &GreMesh) {
    const K: &str = "GreMesh";
    let spec = &mesh.spec;
    let network = spec.network;
    if network != network.trunc() {
        c.push(
            K,
            name,
            "spec.network",
            format!(
                "{network} has host bits set; did you mean {}?",
                network.trunc()
            ),
        );
        return;
    }
    if network.prefix_len() < 8 || network.prefix_len() > 29 {
        c.push(
            K,
            name,
            "spec.network",
            format!("prefix /{} is outside /8../29", network.prefix_len()),
        );
        return;
    }
    let prefix = spec.host_prefix_length.unwrap_or(DEFAULT_HOST_PREFIX);
    if !(8..=30).contains(&prefix) || prefix <= network.prefix_len() {
        c.push(
            K,
            name,
            "spec.hostPrefixLength",
            format!(
                "/{prefix} must be longer than the network's /{} and at most /30",
                network.prefix_len()
            ),
        );
        return;
    }
    let mut pinned: Vec<(usize, Ipv4Net)> = Vec::new();
    for (i, member) in spec.hosts.iter().enumerate() {
        let Some(subnet) = member.subnet else {
            continue;
        };
        let field = format!("spec.hosts[{i}].subnet");
        if subnet != subnet.trunc() {
            c.push(K, name, field, format!("{subnet} has host bits set"));
        } else if !network.contains(&subnet) {
            c.push(
                K,
                name,
                field,
                format!("{subnet} is outside the mesh network {network}"),
            );
        } else if subnet.prefix_len() != prefix {
            c.push(
                K,
                name,
                field,
                format!("{subnet} is not a /{prefix} (spec.hostPrefixLength)"),
            );
        } else if let Some((j, other)) = pinned
            .iter()
            .find(|(_, o)| o.contains(&subnet) || subnet.contains(o))
        {
            c.push(
                K,
                name,
                field,
                format!("{subnet} overlaps {other} of spec.hosts[{j}]"),
            );
        } else {
            pinned.push((i, subnet));
        }
    }
    let room = 1u64 << (prefix - network.prefix_len());
    if spec.hosts.len() as u64 > room {
        c.push(
            K,
            name,
            "spec.hosts",
            format!("{network} holds only {room} subnets of /{prefix}"),
        );
    }
}

/// Two meshes on one host must not share a bridge name, a VXLAN port+VNI, or overlapping
/// networks (their routes would collide on the host).
pub(super) fn check_meshes_sharing_hosts(c: &mut Checker, inv: &Inventory) {
    let meshes: Vec<(&String, &GreMesh)> = inv.meshes.iter().collect();
    for (i, (a_name, a)) in meshes.iter().enumerate() {
        for (b_name, b) in &meshes[i + 1..] {
            let a_hosts: BTreeSet<_> = a.spec.hosts.iter().map(|h| &h.name).collect();
            if !b.spec.hosts.iter().any(|h| a_hosts.contains(&h.name)) {
                continue;
            }
            let bridge = |m: &GreMesh, n: &str| {
                m.spec
                    .bridge
                    .clone()
                    .unwrap_or_else(|| addressing::bridge_name(n).to_string())
            };
            if bridge(a, a_name) == bridge(b, b_name) {
                c.conflict(
                    "GreMesh",
                    b_name,
                    "spec.bridge",
                    a_name,
                    format!("bridge name is already used by mesh {a_name} on a shared host"),
                );
            }
            if a.spec.network.contains(&b.spec.network.network())
                || b.spec.network.contains(&a.spec.network.network())
            {
                c.conflict(
                    "GreMesh",
                    b_name,
                    "spec.network",
                    a_name,
                    format!(
                        "{} overlaps {} of mesh {a_name} on a shared host",
                        b.spec.network, a.spec.network
                    ),
                );
            }
            let net = |m: &GreMesh| m.spec.docker_network.as_ref().map(|n| n.name.clone());
            if net(a).is_some() && net(a) == net(b) {
                c.conflict(
                    "GreMesh",
                    b_name,
                    "spec.dockerNetwork.name",
                    a_name,
                    format!(
                        "Docker network name is already used by mesh {a_name} on a shared host"
                    ),
                );
            }
            let vx = Encapsulation::Vxlan;
            if a.spec.encapsulation_or_default() == vx
                && b.spec.encapsulation_or_default() == vx
                && a.spec.key == b.spec.key
                && a.spec.vxlan_port_or_default() == b.spec.vxlan_port_or_default()
            {
                c.conflict(
                    "GreMesh",
                    b_name,
                    "spec.key",
                    a_name,
                    format!(
                        "VNI {} on port {} is already used by mesh {a_name} on a shared host",
                        b.spec.key,
                        b.spec.vxlan_port_or_default()
                    ),
                );
            }
        }
    }
}
