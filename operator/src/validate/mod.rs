//! Validation beyond the CRD schema: everything that must hold before any host is touched.
//!
//! The schema already checks field types, patterns and ranges when objects go through an API
//! server, but `gremesh apply -f` reads files directly, so every schema rule that matters for
//! safety is checked again here, together with the rules that need several objects at once
//! (unknown hosts, overlapping subnets, duplicate addresses and MACs, two attachments of one
//! container in one subnet). A spec with any error is rejected as a whole: no command runs.
//!
//! Each kind has its own file: `host` checks DockerHosts, `mesh` checks GreMeshes and the
//! meshes that share a host, `attachment` checks ContainerAttachments and the conflicts
//! between them.

use std::fmt;

use regex::Regex;

use crate::manifest::Inventory;

mod attachment;
mod host;
mod mesh;

pub use attachment::check_address_in_subnet_error;
use attachment::check_attachments;
pub use host::check_secrets;
use host::{check_host, check_hosts_distinct};
use mesh::{check_mesh, check_meshes_sharing_hosts};

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
    /// The older object this one conflicts with (same address, MAC, container...), if the
    /// rule is a conflict between two objects.
    pub conflicts_with: Option<String>,
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
            conflicts_with: None,
        });
    }

    /// Checks an object's own name (`metadata.name`).
    fn object_name(&mut self, kind: &'static str, name: &str) {
        let name_re = self.name_re.clone();
        self.pattern(
            kind,
            name,
            "metadata.name",
            name,
            &name_re,
            "a lowercase RFC 1123 name",
        );
    }

    /// `Err` with every error recorded, if there is one.
    fn into_result(self) -> Result<(), Rejected> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(Rejected(self.errors))
        }
    }

    /// Records that `name`'s `field` takes what the older object `other` already has.
    fn conflict(
        &mut self,
        kind: &'static str,
        name: &str,
        field: impl Into<String>,
        other: &str,
        reason: impl Into<String>,
    ) {
        self.push(kind, name, field, reason);
        if let Some(e) = self.errors.last_mut() {
            e.conflicts_with = Some(other.to_owned());
        }
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
    check_hosts_distinct(&mut c, inv);
    for (name, mesh) in &inv.meshes {
        check_mesh(&mut c, inv, name, mesh);
    }
    check_meshes_sharing_hosts(&mut c, inv);
    check_attachments(&mut c, inv);
    c.into_result()
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
    fn conflicts_name_the_older_object_and_other_errors_do_not() {
        let inv = load(&format!(
            "{}---\n{}",
            attachment(
                "web-b",
                "{mesh: m1, host: host-a, container: web-b, address: 10.10.1.10}"
            ),
            attachment(
                "web-c",
                "{mesh: m1, host: host-a, container: web-c, interface: eth-too-long-name}"
            ),
        ));
        let Err(Rejected(errs)) = validate(&inv) else {
            panic!("expected a rejection");
        };
        let of = |n: &str| errs.iter().find(|e| e.name == n).expect(n);
        assert_eq!(of("web-b").field, "spec.address");
        assert_eq!(of("web-b").conflicts_with.as_deref(), Some("web-a"));
        assert_eq!(of("web-c").field, "spec.interface");
        assert_eq!(of("web-c").conflicts_with, None);
    }

    #[test]
    fn mesh_network_over_a_hosts_own_address_is_rejected() {
        let mesh = "apiVersion: gremesh.io/v1alpha1\nkind: GreMesh\nmetadata: {name: m3}\n\
                    spec: {hosts: [{name: host-b}], key: 9, network: 10.200.0.0/24, \
                    encapsulation: vxlan}\n";
        let errs = errors(mesh);
        assert!(
            errs.iter().any(|e| e.starts_with(
                "GreMesh m3: spec.network: 10.200.0.0/24 contains \
                                               10.200.0.12, the underlay address of host host-b"
            )),
            "{errs:?}"
        );
    }

    #[test]
    fn two_hosts_with_one_underlay_address_are_rejected() {
        let host = "apiVersion: gremesh.io/v1alpha1\nkind: DockerHost\nmetadata: {name: host-c}\n\
                    spec: {address: 10.200.0.13, sshKeySecretRef: {name: k}, \
                    hostKey: \"ssh-ed25519 AAAAC3Nz\", underlayAddress: 10.200.0.12}\n";
        assert_eq!(
            errors(host),
            vec![
                "DockerHost host-c: spec.underlayAddress: 10.200.0.12 is already the underlay \
                  address of DockerHost host-b"
            ]
        );
    }

    #[test]
    fn key_secrets_missing_from_the_manifests_are_named() {
        let mut inv = load("");
        let err = check_secrets(&inv).unwrap_err().to_string();
        assert!(
            err.contains(
                "DockerHost host-a: spec.sshKeySecretRef: Secret k with key ssh-privatekey"
            ) && err.contains("DockerHost host-b"),
            "{err}"
        );
        let key =
            std::collections::BTreeMap::from([("ssh-privatekey".to_owned(), b"KEY".to_vec())]);
        inv.secrets.insert("k".into(), key);
        assert_eq!(check_secrets(&inv), Ok(()));
    }

    #[test]
    fn routes_into_a_mesh_network_of_the_container_are_rejected() {
        let errs = errors(&attachment(
            "web-b",
            "{mesh: m1, host: host-b, container: web-b, address: 10.10.2.10, \
             routes: [{to: 10.10.0.0/16, via: 10.10.2.20}, {to: 10.10.7.0/24}, {to: 0.0.0.0/0}]}",
        ));
        let routes: Vec<&String> = errs.iter().filter(|e| e.contains("spec.routes")).collect();
        assert_eq!(routes.len(), 2, "{errs:?}");
        assert!(routes[0].contains("spec.routes[0].to: 10.10.0.0/16 lies in the network"));
        assert!(routes[1].contains("spec.routes[1].to"), "{routes:?}");
    }

    #[test]
    fn kernel_reserved_interface_names_are_rejected() {
        for reserved in ["all", "default"] {
            let errs = errors(&attachment(
                "web-b",
                &format!("{{mesh: m1, host: host-b, container: web-b, interface: {reserved}}}"),
            ));
            assert!(
                errs.iter()
                    .any(|e| e.contains("spec.interface") && e.contains("reserve")),
                "{reserved}: {errs:?}"
            );
        }
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
