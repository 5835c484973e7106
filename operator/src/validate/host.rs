//! DockerHost rules: the name, SSH address, user, port, host key, key Secret and underlay
//! address that SSH connections and tunnel endpoints are built from.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use crate::api::DockerHost;
use crate::manifest::Inventory;

use super::{printable, Checker, Rejected};

/// Checks one DockerHost's own fields.
pub(super) fn check_host(c: &mut Checker, name: &str, host: &DockerHost) {
    const K: &str = "DockerHost";
    let spec = &host.spec;
    c.object_name(K, name);
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
    // The value is not echoed: a private key pasted here by mistake must not reach a log.
    if !c.host_key_re.is_match(&spec.host_key) {
        c.push(
            K,
            name,
            "spec.hostKey",
            "is not \"<key type> <base64>\" of a supported SSH host key type (the value is not \
             shown)",
        );
    }
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

/// Two hosts with one underlay address would be one tunnel endpoint: every peer's tunnels to
/// them would collide. The later name is rejected, naming the other.
pub(super) fn check_hosts_distinct(c: &mut Checker, inv: &Inventory) {
    let mut underlays: BTreeMap<Ipv4Addr, &str> = BTreeMap::new();
    for (name, host) in &inv.hosts {
        let address = host.spec.underlay_address;
        if let Some(other) = underlays.insert(address, name) {
            c.conflict(
                "DockerHost",
                name,
                "spec.underlayAddress",
                other,
                format!("{address} is already the underlay address of DockerHost {other}"),
            );
            underlays.insert(address, other);
        }
    }
}

/// With keys taken from the manifests (no `--identity`), every host's key Secret must be
/// among them; a missing one is a rejection before any host is contacted. (The operator
/// reads Secrets from the cluster, where one may appear later: there it is a host failure
/// that is retried.)
pub fn check_secrets(inv: &Inventory) -> Result<(), Rejected> {
    let mut c = Checker::new();
    for (name, host) in &inv.hosts {
        let secret = &host.spec.ssh_key_secret_ref;
        let key = secret.key_or_default();
        if !inv
            .secrets
            .get(&secret.name)
            .is_some_and(|s| s.contains_key(key))
        {
            c.push(
                "DockerHost",
                name,
                "spec.sshKeySecretRef",
                format!(
                    "Secret {} with key {key} is not in the manifests (add it with -f, or give \
                     the private key with --identity)",
                    secret.name
                ),
            );
        }
    }
    c.into_result()
}
