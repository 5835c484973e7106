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
