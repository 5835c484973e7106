//! Reading the desired network from the API server: every `DockerHost`, `GreMesh` and
//! `ContainerAttachment` of one namespace, and the Secrets the hosts reference, as the same
//! [`Inventory`] that `gremesh apply` builds from files.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Secret;
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};

use crate::api::{ContainerAttachment, DockerHost, GreMesh};
use crate::manifest::Inventory;

/// Lists the namespace's gremesh objects. Secrets are fetched only for the hosts named in
/// `hosts_needing_keys`, and a missing Secret is left out (the engine then reports that host).
pub async fn inventory(
    client: &Client,
    namespace: &str,
    hosts_needing_keys: &BTreeSet<String>,
) -> Result<Inventory, kube::Error> {
    let lp = ListParams::default();
    let hosts: Api<DockerHost> = Api::namespaced(client.clone(), namespace);
    let meshes: Api<GreMesh> = Api::namespaced(client.clone(), namespace);
    let attachments: Api<ContainerAttachment> = Api::namespaced(client.clone(), namespace);
    let (hosts, meshes, attachments) =
        futures::try_join!(hosts.list(&lp), meshes.list(&lp), attachments.list(&lp))?;
    let mut inv = Inventory {
        hosts: hosts.items.into_iter().map(|h| (h.name_any(), h)).collect(),
        meshes: meshes
            .items
            .into_iter()
            .map(|m| (m.name_any(), m))
            .collect(),
        attachments: attachments
            .items
            .into_iter()
            .map(|a| (a.name_any(), a))
            .collect(),
        secrets: BTreeMap::new(),
    };

    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let wanted: BTreeSet<String> = inv
        .hosts
        .iter()
        .filter(|(name, _)| hosts_needing_keys.contains(*name))
        .map(|(_, h)| h.spec.ssh_key_secret_ref.name.clone())
        .collect();
    for name in wanted {
        if let Some(secret) = secrets.get_opt(&name).await? {
            let data: BTreeMap<String, Vec<u8>> = secret
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect();
            inv.secrets.insert(name, data);
        }
    }
    Ok(inv)
}

/// A pass report rebuilt from the statuses the operator wrote, for `gremesh graph --cluster`.
/// A pair's tunnel counts as up when both hosts report all their tunnels up (status keeps
/// counts, not per-peer state).
pub fn report_from_status(inv: &Inventory) -> crate::engine::PassReport {
    use crate::engine::{AttachmentReport, HostReport, MeshHostReport, MeshReport, PassReport};
    let mut report = PassReport::default();
    let mut hosts: BTreeMap<String, HostReport> = BTreeMap::new();
    for (name, mesh) in &inv.meshes {
        let Some(status) = &mesh.status else { continue };
        let ready = status
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        report.meshes.push(MeshReport {
            mesh: name.clone(),
            mtu: status.mtu.unwrap_or(0),
            encapsulation: mesh.spec.encapsulation_or_default(),
            loop_prevention: mesh.spec.loop_prevention_or_default(),
            ready,
            error: None,
        });
        let members: Vec<String> = mesh.spec.hosts.iter().map(|h| h.name.clone()).collect();
        for h in &status.hosts {
            let entry = hosts.entry(h.name.clone()).or_insert_with(|| HostReport {
                host: h.name.clone(),
                converged: true,
                ..HostReport::default()
            });
            entry.converged &= h.ready;
            if !h.message.is_empty() {
                entry.error = Some(h.message.clone());
            }
            let all_up = h.tunnels_up == h.tunnels_expected;
            if let (Some(subnet), Some(gateway)) = (h.subnet, h.gateway) {
                entry.meshes.push(MeshHostReport {
                    mesh: name.clone(),
                    subnet,
                    gateway,
                    tunnels_up: h.tunnels_up,
                    tunnels_expected: h.tunnels_expected,
                    bridge: mesh
                        .spec
                        .bridge
                        .clone()
                        .unwrap_or_else(|| crate::addressing::bridge_name(name).to_string()),
                    peers_unanswered: Vec::new(),
                    peers_up: if all_up {
                        members.iter().filter(|m| **m != h.name).cloned().collect()
                    } else {
                        Vec::new()
                    },
                });
            }
        }
    }
    for (name, att) in &inv.attachments {
        let Some(status) = &att.status else { continue };
        let (Some(id), Some(address)) = (&status.container_id, status.address) else {
            continue;
        };
        let prefix = inv
            .meshes
            .get(&att.spec.mesh)
            .map_or(32, |m| m.spec.network.prefix_len());
        if let Some(h) = hosts.get_mut(&att.spec.host) {
            h.attachments.push(AttachmentReport {
                name: name.clone(),
                mesh: att.spec.mesh.clone(),
                container_id: id.clone(),
                address: ipnet::Ipv4Net::new(address, prefix).expect("prefix from a valid network"),
            });
        }
    }
    report.hosts = hosts.into_values().collect();
    report
}
