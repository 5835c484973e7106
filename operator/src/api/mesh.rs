//! `GreMesh`: one layer-2 network spanning several Docker hosts.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Condition;

/// Default per-host subnet prefix length.
pub const DEFAULT_HOST_PREFIX: u8 = 24;
/// Default VXLAN UDP destination port (IANA).
pub const DEFAULT_VXLAN_PORT: u16 = 4789;

/// A full mesh of layer-2 tunnels between member hosts, one bridge per host.
#[derive(CustomResource, KubeSchema, Clone, Debug, Deserialize, Serialize, PartialEq)]
#[kube(
    group = "gremesh.io",
    version = "v1alpha1",
    kind = "GreMesh",
    namespaced,
    status = "GreMeshStatus",
    shortname = "gm",
    shortname = "mesh",
    category = "gremesh-all",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Hosts","type":"string","jsonPath":".status.hostsReady"}"#,
    printcolumn = r#"{"name":"Encap","type":"string","jsonPath":".spec.encapsulation"}"#,
    printcolumn = r#"{"name":"MTU","type":"integer","jsonPath":".status.mtu"}"#,
    printcolumn = r#"{"name":"Message","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].message"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    validation = kube::core::Rule::new("self.metadata.name.size() <= 63").message("mesh names are at most 63 characters")
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GreMeshSpec {
    /// Member hosts (names of `DockerHost` objects in the same namespace).
    #[schemars(length(min = 1, max = 64))]
    #[x_kube(validation = kube::core::Rule::new("self.all(h, self.exists_one(o, o.name == h.name))").message("each host may appear only once"))]
    pub hosts: Vec<MeshMember>,
    /// Tunnel encapsulation: `gretap` (Ethernet over GRE, default) or `vxlan`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encapsulation: Option<Encapsulation>,
    /// GRE key or VXLAN network identifier of the mesh (1–16777215).
    #[schemars(range(min = 1, max = 16777215))]
    pub key: u32,
    /// The overlay network; every host's subnet is carved from it.
    #[schemars(
        with = "String",
        regex(pattern = r"^([0-9]{1,3}\.){3}[0-9]{1,3}/[0-9]{1,2}$")
    )]
    pub network: Ipv4Net,
    /// Prefix length of each host's subnet (default 24).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 8, max = 30))]
    pub host_prefix_length: Option<u8>,
    /// Fixed MTU for bridge, tunnels and container interfaces. Unset: the smallest underlay
    /// MTU of the member hosts minus the encapsulation overhead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 576, max = 9000))]
    pub mtu: Option<u32>,
    /// Name of the bridge on every host (default: derived from the mesh name, `gm-…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,14}$"))]
    #[x_kube(validation = kube::core::Rule::new("!(self in ['all', 'default'])").message("'all' and 'default' are reserved by the kernel"))]
    pub bridge: Option<String>,
    /// How loops in the full mesh are prevented: `isolated` (split horizon, default) or `stp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loop_prevention: Option<LoopPrevention>,
    /// VXLAN UDP destination port (default 4789). Ignored for gretap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub vxlan_port: Option<u16>,
    /// A Docker network on every host, bound to the mesh bridge, so that
    /// `docker run --network NAME` on any host gives a container an address on the mesh. Docker
    /// hands out the upper half of each host's subnet; attachments get the lower half.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_network: Option<DockerNetwork>,
}

/// A Docker network over the mesh.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DockerNetwork {
    /// Name of the Docker network on every host.
    #[schemars(regex(pattern = r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$"))]
    pub name: String,
}

/// One member host of a mesh.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshMember {
    /// Name of the `DockerHost`.
    #[schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"))]
    pub name: String,
    /// Pinned container subnet of this host (inside `network`, of `hostPrefixLength`).
    /// Unset: chosen by gremesh and stable while the host stays in the mesh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        with = "Option<String>",
        regex(pattern = r"^([0-9]{1,3}\.){3}[0-9]{1,3}/[0-9]{1,2}$")
    )]
    pub subnet: Option<Ipv4Net>,
}

/// Tunnel encapsulation.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Encapsulation {
    /// Ethernet over GRE (`gretap`), one device per peer.
    #[default]
    Gretap,
    /// VXLAN over UDP, one device per host with a flood entry per peer.
    Vxlan,
}

impl Encapsulation {
    /// Bytes of encapsulation added to every frame (outer IPv4 header included). gremesh
    /// always sets a GRE key, so gretap costs 42 bytes (38 without a key).
    pub fn overhead(self) -> u32 {
        match self {
            Encapsulation::Gretap => 42,
            Encapsulation::Vxlan => 50,
        }
    }

    /// Lowercase name as written in the spec.
    pub fn as_str(self) -> &'static str {
        match self {
            Encapsulation::Gretap => "gretap",
            Encapsulation::Vxlan => "vxlan",
        }
    }
}

/// Loop prevention on a full mesh of layer-2 tunnels.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum LoopPrevention {
    /// Tunnel ports are bridge-`isolated`: frames from one tunnel never go out another.
    #[default]
    Isolated,
    /// Classic spanning tree on the bridge (converges in tens of seconds).
    Stp,
}

impl GreMeshSpec {
    /// Encapsulation, defaulted.
    pub fn encapsulation_or_default(&self) -> Encapsulation {
        self.encapsulation.unwrap_or_default()
    }

    /// Host prefix length, defaulted.
    pub fn host_prefix_or_default(&self) -> u8 {
        self.host_prefix_length.unwrap_or(DEFAULT_HOST_PREFIX)
    }

    /// Loop prevention, defaulted.
    pub fn loop_prevention_or_default(&self) -> LoopPrevention {
        self.loop_prevention.unwrap_or_default()
    }

    /// VXLAN port, defaulted.
    pub fn vxlan_port_or_default(&self) -> u16 {
        self.vxlan_port.unwrap_or(DEFAULT_VXLAN_PORT)
    }
}

/// What gremesh last achieved for a mesh.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GreMeshStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Progressing`, `Degraded`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The MTU in force on bridges, tunnels and container interfaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// `ready/total` hosts, for the printer column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts_ready: Option<String>,
    /// Loop prevention in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loop_prevention: Option<LoopPrevention>,
    /// Per host: subnet, gateway, tunnels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<MeshHostStatus>,
}

/// Per-host part of a mesh status.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MeshHostStatus {
    /// Host name.
    pub name: String,
    /// The host's container subnet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub subnet: Option<Ipv4Net>,
    /// The gateway address carried by the host's bridge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Ipv4Addr>,
    /// Tunnels present and up.
    #[serde(default)]
    pub tunnels_up: u32,
    /// Tunnels the spec asks for.
    #[serde(default)]
    pub tunnels_expected: u32,
    /// Whether the host is converged.
    #[serde(default)]
    pub ready: bool,
    /// What is wrong, when something is.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}
