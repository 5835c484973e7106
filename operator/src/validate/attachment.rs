//! ContainerAttachment rules: each attachment's fields against its mesh and host, then the
//! conflicts between attachments (address, MAC, container, route, interface), oldest first.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::addressing::{self, IfName, Mac};
use crate::api::ContainerAttachment;
use crate::manifest::Inventory;

use super::{printable, Checker};

/// Checks each attachment's fields, oldest first, and its conflicts with the ones before it.
pub(super) fn check_attachments(c: &mut Checker, inv: &Inventory) {
    const K: &str = "ContainerAttachment";
    // (mesh, address) → attachment; (mesh, mac) → attachment; (host, container, mesh) → attachment;
    // (host, container, interface) → attachment.
    let mut addresses: BTreeMap<(&str, Ipv4Addr), &str> = BTreeMap::new();
    let mut macs: BTreeMap<(&str, Mac), &str> = BTreeMap::new();
    let mut containers: BTreeMap<(&str, &str, &str), &str> = BTreeMap::new();
    let mut interfaces: BTreeMap<(&str, &str, &str), &str> = BTreeMap::new();
    let mut routes: BTreeMap<(&str, &str, Ipv4Net), &str> = BTreeMap::new();
    // Oldest first, so that of two conflicting attachments the later one is rejected.
    let mut ordered: Vec<(&String, &ContainerAttachment)> = inv.attachments.iter().collect();
    ordered.sort_by_key(|(n, a)| (a.metadata.creation_timestamp.as_ref().map(|t| t.0), *n));
    for (name, att) in ordered {
        let before = c.errors.len();
        check_attachment_fields(c, inv, name, att);
        if c.errors.len() != before {
            continue;
        }
        let spec = &att.spec;
        let mac = match &spec.mac {
            Some(m) => m.parse().expect("checked above"),
            None => addressing::attachment_mac(&spec.mesh, name),
        };
        if let Some(other) = spec
            .address
            .and_then(|a| addresses.insert((&spec.mesh, a), name))
        {
            c.conflict(
                K,
                name,
                "spec.address",
                other,
                format!(
                    "{} is already used by attachment {other} in mesh {}",
                    spec.address.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED),
                    spec.mesh
                ),
            );
        }
        if let Some(other) = macs.insert((&spec.mesh, mac), name) {
            c.conflict(
                K,
                name,
                "spec.mac",
                other,
                format!(
                    "{mac} is already used by attachment {other} in mesh {}",
                    spec.mesh
                ),
            );
        }
        if let Some(other) = containers.insert((&spec.host, &spec.container, &spec.mesh), name) {
            c.conflict(
                K,
                name,
                "spec.container",
                other,
                format!("container {} on {} is already attached to mesh {} by {other}; two interfaces in one subnet break routing (\"File exists\")", spec.container, spec.host, spec.mesh),
            );
        }
        for (i, route) in spec.routes.iter().enumerate() {
            if let Some(other) = routes.insert((&spec.host, &spec.container, route.to), name) {
                c.conflict(
                    K,
                    name,
                    format!("spec.routes[{i}].to"),
                    other,
                    format!(
                        "container {} already has a route to {} from attachment {other}",
                        spec.container, route.to
                    ),
                );
            }
        }
        if let Some(other) = interfaces.insert(
            (&spec.host, &spec.container, spec.interface_or_default()),
            name,
        ) {
            c.conflict(
                K,
                name,
                "spec.interface",
                other,
                format!(
                    "{} in container {} is already used by attachment {other}",
                    spec.interface_or_default(),
                    spec.container
                ),
            );
        }
    }
}

fn check_attachment_fields(
    c: &mut Checker,
    inv: &Inventory,
    name: &str,
    att: &ContainerAttachment,
) {
    const K: &str = "ContainerAttachment";
    let spec = &att.spec;
    c.object_name(K, name);
    let re = c.container_re.clone();
    c.pattern(
        K,
        name,
        "spec.container",
        &spec.container,
        &re,
        "a Docker container name or ID",
    );
    if let Err(e) = IfName::new(spec.interface_or_default()) {
        c.push(K, name, "spec.interface", e.to_string());
    } else if spec.interface_or_default() == "lo" {
        c.push(
            K,
            name,
            "spec.interface",
            "\"lo\" is the container's loopback",
        );
    }
    if let Some(mac) = &spec.mac {
        match mac.parse::<Mac>() {
            Ok(m) if m.is_unicast() => {}
            Ok(m) => c.push(K, name, "spec.mac", format!("{m} is not a unicast address")),
            Err(e) => c.push(K, name, "spec.mac", e),
        }
    }
    let Some(mesh) = inv.meshes.get(&spec.mesh) else {
        c.push(
            K,
            name,
            "spec.mesh",
            format!("unknown GreMesh {}", printable(&spec.mesh)),
        );
        return;
    };
    let Some(member) = mesh.spec.hosts.iter().find(|h| h.name == spec.host) else {
        c.push(
            K,
            name,
            "spec.host",
            format!(
                "{} is not a host of mesh {}",
                printable(&spec.host),
                spec.mesh
            ),
        );
        return;
    };
    let network = mesh.spec.network;
    if let Some(address) = spec.address {
        if !network.contains(&address) {
            c.push(
                K,
                name,
                "spec.address",
                format!("{address} is outside the mesh network {network}"),
            );
        } else if let Some(subnet) = member.subnet {
            // Only pinned subnets are known without the hosts' previous state; an unpinned
            // host's subnet is checked again once assigned (see `desired`).
            check_address_in_subnet(c, name, address, subnet);
            if mesh.spec.docker_network.is_some()
                && addressing::docker_ip_range(subnet).contains(&address)
            {
                c.push(
                    K,
                    name,
                    "spec.address",
                    format!(
                        "{address} is in {}, which the mesh's Docker network hands out",
                        addressing::docker_ip_range(subnet)
                    ),
                );
            }
        }
    }
    for (i, route) in spec.routes.iter().enumerate() {
        if route.to != route.to.trunc() {
            c.push(
                K,
                name,
                format!("spec.routes[{i}].to"),
                format!("{} has host bits set", route.to),
            );
        }
        // The mesh networks of the container's attachments are on-link through their own
        // interfaces: a route into one of them would replace that connected route.
        let attached_networks = inv
            .attachments
            .values()
            .filter(|o| o.spec.host == spec.host && o.spec.container == spec.container)
            .filter_map(|o| {
                inv.meshes
                    .get(&o.spec.mesh)
                    .map(|m| (&o.spec.mesh, m.spec.network))
            });
        for (other_mesh, other_network) in attached_networks {
            if other_network.contains(&route.to.trunc()) {
                c.push(
                    K,
                    name,
                    format!("spec.routes[{i}].to"),
                    format!(
                        "{} lies in the network {other_network} of mesh {other_mesh}, which the \
                         container reaches on-link already",
                        route.to
                    ),
                );
                break;
            }
        }
        if let Some(via) = route.via {
            if !network.contains(&via) {
                c.push(
                    K,
                    name,
                    format!("spec.routes[{i}].via"),
                    format!("{via} is not on the mesh network {network}"),
                );
            }
        }
    }
}

/// Checks that an attachment address is a usable host address of `subnet` and not its gateway.
pub fn check_address_in_subnet_error(address: Ipv4Addr, subnet: Ipv4Net) -> Option<String> {
    if !subnet.contains(&address) {
        Some(format!("{address} is outside the host's subnet {subnet}"))
    } else if address == subnet.network() || address == subnet.broadcast() {
        Some(format!(
            "{address} is the network or broadcast address of {subnet}"
        ))
    } else if address == addressing::gateway(subnet) {
        Some(format!(
            "{address} is the host's gateway on the mesh bridge"
        ))
    } else {
        None
    }
}

fn check_address_in_subnet(c: &mut Checker, name: &str, address: Ipv4Addr, subnet: Ipv4Net) {
    if let Some(reason) = check_address_in_subnet_error(address, subnet) {
        c.push("ContainerAttachment", name, "spec.address", reason);
    }
}
