//! `DockerHost`: how to reach one Docker host over SSH and where its tunnels end.

use std::net::Ipv4Addr;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Condition;

/// Default SSH port.
pub const DEFAULT_PORT: u16 = 22;
/// Default SSH user.
pub const DEFAULT_USER: &str = "root";
/// Default key inside the SSH key Secret (the `kubernetes.io/ssh-auth` convention).
pub const DEFAULT_SECRET_KEY: &str = "ssh-privatekey";

/// A machine running `dockerd` that gremesh reaches over SSH.
#[derive(CustomResource, Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[kube(
    group = "gremesh.io",
    version = "v1alpha1",
    kind = "DockerHost",
    namespaced,
    status = "DockerHostStatus",
    shortname = "dh",
    category = "gremesh-all",
    printcolumn = r#"{"name":"Address","type":"string","jsonPath":".spec.address"}"#,
    printcolumn = r#"{"name":"Underlay","type":"string","jsonPath":".spec.underlayAddress"}"#,
    printcolumn = r#"{"name":"Reachable","type":"boolean","jsonPath":".status.reachable"}"#,
    printcolumn = r#"{"name":"Docker","type":"string","jsonPath":".status.capabilities.dockerVersion"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DockerHostSpec {
    /// SSH address of the host: an IPv4 address or a DNS name.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")
    )]
    pub address: String,
    /// SSH port (default 22).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u16>,
    /// SSH user (default `root`); must be able to run `ip`, `bridge`, `nsenter` and `docker`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-z_][a-z0-9_-]{0,31}$"))]
    pub user: Option<String>,
    /// The Secret holding the SSH private key (same namespace).
    pub ssh_key_secret_ref: SecretKeyRef,
    /// The host's public SSH host key, pinned: `<type> <base64>` as in `ssh-keyscan` output
    /// without the host name. Connections to a host presenting any other key are refused.
    #[schemars(regex(
        pattern = r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp256|ecdsa-sha2-nistp384|ecdsa-sha2-nistp521) [A-Za-z0-9+/]+={0,3}$"
    ))]
    pub host_key: String,
    /// The host's own address on the underlay network, used as tunnel endpoint.
    pub underlay_address: Ipv4Addr,
}

/// A reference to one key of a Secret.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"))]
    pub name: String,
    /// Key inside the Secret (default `ssh-privatekey`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[-._a-zA-Z0-9]{1,253}$"))]
    pub key: Option<String>,
}

impl SecretKeyRef {
    /// The key inside the Secret, defaulted.
    pub fn key_or_default(&self) -> &str {
        self.key.as_deref().unwrap_or(DEFAULT_SECRET_KEY)
    }
}

impl DockerHostSpec {
    /// SSH port, defaulted.
    pub fn port_or_default(&self) -> u16 {
        self.port.unwrap_or(DEFAULT_PORT)
    }

    /// SSH user, defaulted.
    pub fn user_or_default(&self) -> &str {
        self.user.as_deref().unwrap_or(DEFAULT_USER)
    }
}

/// What gremesh last saw of a host.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DockerHostStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Whether the last connection attempt succeeded.
    #[serde(default)]
    pub reachable: bool,
    /// What the host can do, from the last probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<HostCapabilities>,
    /// Time of the last successful probe (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_contact: Option<String>,
    /// Why the host is not usable, when it is not.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// `Ready` and friends.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Capabilities read from a host by the probe.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct HostCapabilities {
    /// The kernel can create `gretap` devices (ip_gre loaded or loadable).
    pub gretap: bool,
    /// The kernel can create `vxlan` devices.
    pub vxlan: bool,
    /// Version of the Docker engine, when one answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_version: Option<String>,
    /// MTU of the device that carries the underlay address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub underlay_mtu: Option<u32>,
}
