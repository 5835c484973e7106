//! Validation beyond the CRD schema: everything that must hold before any host is touched.
//!
//! The schema already checks field types, patterns and ranges when objects go through an API
//! server, but `gremesh apply -f` reads files directly, so every schema rule that matters for
//! safety is checked again here, together with the rules that need several objects at once
//! (unknown hosts, overlapping subnets, duplicate addresses and MACs, two attachments of one
//! container in one subnet). A spec with any error is rejected as a whole: no command runs.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use regex::Regex;

use crate::addressing::{self, IfName, Mac};
use crate::api::mesh::DEFAULT_HOST_PREFIX;
use crate::api::{ContainerAttachment, DockerHost, Encapsulation, GreMesh};
use crate::manifest::Inventory;

/// One rule a spec breaks: which object, which field, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{kind} {name}: {field}: {reason}")]
pub struct ValidationError {
    /// Kind of the object.
    pub kind: &'static str,
    /// Name of the object.
    pub name: String,
    /// Path of the offending field, e.g. `spec.hosts[1].subnet`.
    pub field: String,
    /// Why it is rejected.
    pub reason: String,
}

/// All the errors of one spec.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct Rejected(pub Vec<ValidationError>);

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "spec rejected, no host was touched:")?;
        for e in &self.0 {
            write!(f, "\n  - {e}")?;
        }
        Ok(())
    }
}

struct Checker {
    errors: Vec<ValidationError>,
    name_re: Regex,
    host_key_re: Regex,
    address_re: Regex,
    user_re: Regex,
    container_re: Regex,
    secret_re: Regex,
}

impl Checker {
    fn new() -> Self {
        let re = |p: &str| Regex::new(p).expect("static pattern");
        Self {
            errors: Vec::new(),
            name_re: re(crate::api::NAME_PATTERN),
            host_key_re: re(
                r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp256|ecdsa-sha2-nistp384|ecdsa-sha2-nistp521) [A-Za-z0-9+/]+={0,3}$",
            ),
            address_re: re(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$"),
            user_re: re(r"^[a-z_][a-z0-9_-]{0,31}$"),
            container_re: re(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$"),
            secret_re: re(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"),
        }
    }

    fn push(
        &mut self,
        kind: &'static str,
        name: &str,
        field: impl Into<String>,
        reason: impl Into<String>,
    ) {
        self.errors.push(ValidationError {
            kind,
            name: name.to_owned(),
            field: field.into(),
            reason: reason.into(),
        });
    }

    fn pattern(
        &mut self,
        kind: &'static str,
        name: &str,
        field: &str,
        value: &str,
        which: &Regex,
        what: &str,
    ) {
        if !which.is_match(value) {
            self.push(
                kind,
                name,
                field,
                format!("{} is not {what}", printable(value)),
            );
        }
    }
}

/// Quotes a user string for an error message so control characters stay visible and long
/// values stay short.
fn printable(value: &str) -> String {
    let mut shown: String = value.chars().take(64).collect();
    if value.chars().count() > 64 {
        shown.push('…');
    }
    format!("{shown:?}")
}

/// Validates a whole inventory; `Err` lists every problem found.
pub fn validate(inv: &Inventory) -> Result<(), Rejected> {
    let mut c = Checker::new();
    for (name, host) in &inv.hosts {
        check_host(&mut c, name, host);
    }
    for (name, mesh) in &inv.meshes {
        check_mesh(&mut c, inv, name, mesh);
    }
    check_meshes_sharing_hosts(&mut c, inv);
    check_attachments(&mut c, inv);
    if c.errors.is_empty() {
        Ok(())
    } else {
        Err(Rejected(c.errors))
    }
}

fn check_host(c: &mut Checker, name: &str, host: &DockerHost) {
    const K: &str = "DockerHost";
    let spec = &host.spec;
    let name_re = c.name_re.clone();
    c.pattern(
        K,
        name,
        "metadata.name",
        name,
        &name_re,
        "a lowercase RFC 1123 name",
    );
    let re = c.address_re.clone();
    c.pattern(
        K,
        name,
        "spec.address",
        &spec.address,
        &re,
        "an IPv4 address or DNS name",
    );
    if let Some(user) = &spec.user {
        let re = c.user_re.clone();
        c.pattern(K, name, "spec.user", user, &re, "a POSIX user name");
    }
    if spec.port == Some(0) {
        c.push(K, name, "spec.port", "must be between 1 and 65535");
    }
    let re = c.host_key_re.clone();
    c.pattern(
        K,
        name,
        "spec.hostKey",
        &spec.host_key,
        &re,
        "\"<key type> <base64>\" of a supported SSH host key type",
    );
    let re = c.secret_re.clone();
    c.pattern(
        K,
        name,
        "spec.sshKeySecretRef.name",
        &spec.ssh_key_secret_ref.name,
        &re,
        "a Secret name",
    );
    let key = spec.ssh_key_secret_ref.key_or_default();
    if key.is_empty()
        || key.len() > 253
        || !key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
    {
        c.push(
            K,
            name,
            "spec.sshKeySecretRef.key",
            format!("{} is not a Secret key", printable(key)),
        );
    }
    let u = spec.underlay_address;
    if u.is_unspecified() || u.is_loopback() || u.is_multicast() || u.is_broadcast() {
        c.push(
            K,
            name,
            "spec.underlayAddress",
            format!("{u} cannot be a tunnel endpoint"),
        );
    }
}

fn check_mesh(c: &mut Checker, inv: &Inventory, name: &str, mesh: &GreMesh) {
    const K: &str = "GreMesh";
    let spec = &mesh.spec;
    let name_re = c.name_re.clone();
    c.pattern(
        K,
        name,
        "metadata.name",
        name,
        &name_re,
        "a lowercase RFC 1123 name",
    );
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
        } else if !inv.hosts.contains_key(&member.name) {
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
fn check_meshes_sharing_hosts(c: &mut Checker, inv: &Inventory) {
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
                c.push(
                    "GreMesh",
                    b_name,
                    "spec.bridge",
                    format!("bridge name is already used by mesh {a_name} on a shared host"),
                );
            }
            if a.spec.network.contains(&b.spec.network.network())
                || b.spec.network.contains(&a.spec.network.network())
            {
                c.push(
                    "GreMesh",
                    b_name,
                    "spec.network",
                    format!(
                        "{} overlaps {} of mesh {a_name} on a shared host",
                        b.spec.network, a.spec.network
                    ),
                );
            }
            let net = |m: &GreMesh| m.spec.docker_network.as_ref().map(|n| n.name.clone());
            if net(a).is_some() && net(a) == net(b) {
                c.push(
                    "GreMesh",
                    b_name,
                    "spec.dockerNetwork.name",
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
                c.push(
                    "GreMesh",
                    b_name,
                    "spec.key",
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

fn check_attachments(c: &mut Checker, inv: &Inventory) {
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
            c.push(
                K,
                name,
                "spec.address",
                format!(
                    "{} is already used by attachment {other} in mesh {}",
                    spec.address.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED),
                    spec.mesh
                ),
            );
        }
        if let Some(other) = macs.insert((&spec.mesh, mac), name) {
            c.push(
                K,
                name,
                "spec.mac",
                format!(
                    "{mac} is already used by attachment {other} in mesh {}",
                    spec.mesh
                ),
            );
        }
        if let Some(other) = containers.insert((&spec.host, &spec.container, &spec.mesh), name) {
            c.push(
                K,
                name,
                "spec.container",
                format!("container {} on {} is already attached to mesh {} by {other}; two interfaces in one subnet break routing (\"File exists\")", spec.container, spec.host, spec.mesh),
            );
        }
        for (i, route) in spec.routes.iter().enumerate() {
            if let Some(other) = routes.insert((&spec.host, &spec.container, route.to), name) {
                c.push(
                    K,
                    name,
                    format!("spec.routes[{i}].to"),
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
            c.push(
                K,
                name,
                "spec.interface",
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
    let name_re = c.name_re.clone();
    c.pattern(
        K,
        name,
        "metadata.name",
        name,
        &name_re,
        "a lowercase RFC 1123 name",
    );
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    pub(crate) const BASE: &str = r#"
apiVersion: gremesh.io/v1alpha1
kind: DockerHost
metadata: {name: host-a}
spec: {address: 10.200.0.11, sshKeySecretRef: {name: k}, hostKey: "ssh-ed25519 AAAAC3Nz", underlayAddress: 10.200.0.11}
---
apiVersion: gremesh.io/v1alpha1
kind: DockerHost
metadata: {name: host-b}
spec: {address: 10.200.0.12, sshKeySecretRef: {name: k}, hostKey: "ssh-ed25519 AAAAC3Nz", underlayAddress: 10.200.0.12}
---
apiVersion: gremesh.io/v1alpha1
kind: GreMesh
metadata: {name: m1}
spec:
  hosts: [{name: host-a, subnet: 10.10.1.0/24}, {name: host-b, subnet: 10.10.2.0/24}]
  encapsulation: vxlan
  key: 42
  network: 10.10.0.0/16
---
apiVersion: gremesh.io/v1alpha1
kind: ContainerAttachment
metadata: {name: web-a}
spec: {mesh: m1, host: host-a, container: web-a, address: 10.10.1.10}
"#;

    fn load(extra: &str) -> Inventory {
        let mut inv = Inventory::default();
        inv.add_yaml(Path::new("t.yaml"), &format!("{BASE}\n---\n{extra}"))
            .unwrap();
        inv
    }

    fn errors(extra: &str) -> Vec<String> {
        match validate(&load(extra)) {
            Ok(()) => vec![],
            Err(Rejected(errs)) => errs.iter().map(|e| e.to_string()).collect(),
        }
    }

    fn attachment(name: &str, body: &str) -> String {
        format!("apiVersion: gremesh.io/v1alpha1\nkind: ContainerAttachment\nmetadata: {{name: {name}}}\nspec: {body}\n")
    }

    #[test]
    fn base_spec_is_valid() {
        assert_eq!(errors(""), Vec::<String>::new());
    }

    #[test]
    fn second_attachment_of_one_container_in_one_mesh_is_rejected() {
        let errs = errors(&attachment(
            "web-a2",
            "{mesh: m1, host: host-a, container: web-a, interface: eth2, address: 10.10.1.11}",
        ));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].contains("ContainerAttachment web-a2: spec.container"),
            "{errs:?}"
        );
        assert!(
            errs[0].contains("already attached to mesh m1 by web-a"),
            "{errs:?}"
        );
    }

    #[test]
    fn duplicate_address_names_the_other_attachment() {
        let errs = errors(&attachment(
            "web-b",
            "{mesh: m1, host: host-a, container: web-b, address: 10.10.1.10}",
        ));
        assert!(
            errs.iter()
                .any(|e| e.contains("spec.address") && e.contains("web-a")),
            "{errs:?}"
        );
    }

    #[test]
    fn address_outside_host_subnet_and_gateway_are_rejected() {
        let errs = errors(&attachment(
            "x",
            "{mesh: m1, host: host-b, container: x, address: 10.10.1.20}",
        ));
        assert!(
            errs.iter()
                .any(|e| e.contains("outside the host's subnet 10.10.2.0/24")),
            "{errs:?}"
        );
        let errs = errors(&attachment(
            "y",
            "{mesh: m1, host: host-b, container: y, address: 10.10.2.1}",
        ));
        assert!(errs.iter().any(|e| e.contains("gateway")), "{errs:?}");
    }

    #[test]
    fn unknown_host_and_long_interface_name_are_rejected() {
        let errs = errors(&attachment(
            "z",
            "{mesh: m1, host: host-q, container: z, address: 10.10.1.30}",
        ));
        assert!(
            errs.iter()
                .any(|e| e.contains("spec.host") && e.contains("host-q")),
            "{errs:?}"
        );
        let errs = errors(&attachment("z", "{mesh: m1, host: host-a, container: z, interface: abcdefghijklmnop, address: 10.10.1.30}"));
        assert!(
            errs.iter().any(|e| e.contains("spec.interface")),
            "{errs:?}"
        );
    }

    #[test]
    fn hostile_strings_are_rejected_with_the_field() {
        for bad in [
            "a;reboot",
            "-oProxyCommand=x",
            "a b",
            "a\nb",
            "$(id)",
            "`id`",
            "é",
            "x'y",
        ] {
            let doc = attachment(
                "h",
                &format!("{{mesh: m1, host: host-a, container: {bad:?}, address: 10.10.1.40}}"),
            );
            let errs = errors(&doc);
            assert!(
                errs.iter().any(|e| e.contains("spec.container")),
                "{bad:?}: {errs:?}"
            );
        }
    }

    #[test]
    fn overlapping_pinned_subnets_and_outside_network_are_rejected() {
        let mut inv = load("");
        let mesh = inv.meshes.get_mut("m1").unwrap();
        mesh.spec.hosts[1].subnet = Some("10.10.1.0/24".parse().unwrap());
        let errs = validate(&inv).unwrap_err().0;
        assert!(
            errs.iter()
                .any(|e| e.field == "spec.hosts[1].subnet" && e.reason.contains("overlaps")),
            "{errs:?}"
        );
        mesh_subnet(&mut inv, "10.11.0.0/24");
        let errs = validate(&inv).unwrap_err().0;
        assert!(
            errs.iter()
                .any(|e| e.reason.contains("outside the mesh network")),
            "{errs:?}"
        );
    }

    fn mesh_subnet(inv: &mut Inventory, s: &str) {
        inv.meshes.get_mut("m1").unwrap().spec.hosts[1].subnet = Some(s.parse().unwrap());
    }

    #[test]
    fn meshes_sharing_a_host_must_not_overlap() {
        let other = "apiVersion: gremesh.io/v1alpha1\nkind: GreMesh\nmetadata: {name: m2}\nspec: {hosts: [{name: host-a}], encapsulation: vxlan, key: 42, network: 10.10.128.0/17}\n";
        let errs = errors(other);
        assert!(
            errs.iter().any(|e| e.contains("GreMesh m2: spec.network")),
            "{errs:?}"
        );
        assert!(
            errs.iter().any(|e| e.contains("GreMesh m2: spec.key")),
            "{errs:?}"
        );
    }

    fn safe(value: &str) -> bool {
        !value.is_empty()
            && !value.starts_with('-')
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    }

    proptest::proptest! {
        /// Any string in any user-controlled field either is rejected naming that field, or
        /// consists only of characters no shell or `ip` treats specially.
        #[test]
        fn hostile_strings_are_rejected_or_harmless(value in "\\PC{0,80}", which in 0usize..7) {
            let mut inv = load("");
            let (field, kind) = match which {
                0 => { inv.attachments.get_mut("web-a").unwrap().spec.container = value.clone(); ("spec.container", "ContainerAttachment") }
                1 => { inv.attachments.get_mut("web-a").unwrap().spec.interface = Some(value.clone()); ("spec.interface", "ContainerAttachment") }
                2 => { inv.meshes.get_mut("m1").unwrap().spec.bridge = Some(value.clone()); ("spec.bridge", "GreMesh") }
                3 => { inv.hosts.get_mut("host-a").unwrap().spec.user = Some(value.clone()); ("spec.user", "DockerHost") }
                4 => { inv.hosts.get_mut("host-a").unwrap().spec.address = value.clone(); ("spec.address", "DockerHost") }
                5 => { inv.hosts.get_mut("host-a").unwrap().spec.ssh_key_secret_ref.name = value.clone(); ("spec.sshKeySecretRef.name", "DockerHost") }
                _ => { inv.meshes.get_mut("m1").unwrap().spec.docker_network = Some(crate::api::DockerNetwork { name: value.clone() }); ("spec.dockerNetwork.name", "GreMesh") }
            };
            let rejected = validate(&inv).err().is_some_and(|r| r.0.iter().any(|e| e.kind == kind && e.field == field));
            proptest::prop_assert!(rejected || safe(&value), "{value:?} in {field} was accepted");
        }
    }
}
