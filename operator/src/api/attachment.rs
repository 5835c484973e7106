//! `ContainerAttachment`: one container on one host plugged into one mesh.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Condition;

/// Default interface name inside the container.
pub const DEFAULT_INTERFACE: &str = "eth1";

/// A veth from the mesh bridge into a running container's network namespace.
#[derive(CustomResource, KubeSchema, Clone, Debug, Deserialize, Serialize, PartialEq)]
#[kube(
    group = "gremesh.io",
    version = "v1alpha1",
    kind = "ContainerAttachment",
    namespaced,
    status = "ContainerAttachmentStatus",
    shortname = "gma",
    shortname = "attach",
    category = "gremesh-all",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Mesh","type":"string","jsonPath":".spec.mesh"}"#,
    printcolumn = r#"{"name":"Host","type":"string","jsonPath":".spec.host"}"#,
    printcolumn = r#"{"name":"Container","type":"string","jsonPath":".spec.container"}"#,
    printcolumn = r#"{"name":"Address","type":"string","jsonPath":".status.address"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerAttachmentSpec {
    /// Name of the `GreMesh` (same namespace).
    #[schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"))]
    pub mesh: String,
    /// Name of the `DockerHost` the container runs on; must be a member of the mesh.
    #[schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"))]
    pub host: String,
    /// Container name or full/short ID, as `docker` accepts it.
    #[schemars(regex(pattern = r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$"))]
    pub container: String,
    /// Interface name inside the container (default `eth1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,14}$"))]
    #[x_kube(validation = kube::core::Rule::new("!(self in ['all', 'default'])").message("'all' and 'default' are reserved by the kernel"))]
    pub interface: Option<String>,
    /// The container's address on the mesh; must lie in the host's subnet. Unset: gremesh
    /// allocates the lowest free address of the host's subnet (after the gateway) and keeps it
    /// (recorded in status) for the life of the attachment. It is configured with the prefix
    /// length of the mesh network, so the whole mesh is on-link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Ipv4Addr>,
    /// MAC address (default: derived from mesh and attachment names, stable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$"))]
    pub mac: Option<String>,
    /// Extra routes inside the container, through this interface.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub routes: Vec<Route>,
}

/// A route inside the container.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Route {
    /// Destination network.
    #[schemars(
        with = "String",
        regex(pattern = r"^([0-9]{1,3}\.){3}[0-9]{1,3}/[0-9]{1,2}$")
    )]
    pub to: Ipv4Net,
    /// Next hop on the mesh (default: on-link).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<Ipv4Addr>,
}

impl ContainerAttachmentSpec {
    /// Interface name inside the container, defaulted.
    pub fn interface_or_default(&self) -> &str {
        self.interface.as_deref().unwrap_or(DEFAULT_INTERFACE)
    }
}

/// What gremesh last achieved for an attachment.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerAttachmentStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// ID of the container actually attached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// Address actually configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Ipv4Addr>,
    /// MAC actually configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// `Ready`, `Progressing`, `Degraded`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
