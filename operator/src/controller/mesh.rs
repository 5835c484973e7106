//! Reconciling one `GreMesh`: read → validate → pass over the hosts → statuses, events and
//! finalizers. Deleting a mesh (finalizer cleanup) removes its devices from every host.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event as KubeEvent, EventType};
use kube::runtime::finalizer::{finalizer, Event as Finalizer};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use super::status::{self, Outcome};
use super::{cluster, Context, Error};
use crate::api::{ContainerAttachment, DockerHost, GreMesh};
use crate::engine::{run_pass, PassOptions, PassReport};
use crate::manifest::Inventory;
use crate::plan::IssueReason;
use crate::validate::{validate, ValidationError};

/// Finalizer on meshes and attachments: the devices gremesh made must be removed first.
pub const FINALIZER: &str = "gremesh.io/cleanup";
/// Annotation on a `DockerHost` that lets go of a host that is gone for good: it is no longer
/// contacted for cleanup, so deletions do not wait for it.
pub const ABANDON: &str = "gremesh.io/abandon";

/// How long a mesh pass waits for slow hosts before laying out the mesh without them; their
/// last known underlay MTU (host status) and subnet (mesh status) stand in meanwhile.
const OBSERVE_DEADLINE: Duration = Duration::from_secs(3);

/// Entry point for the controller.
pub async fn reconcile(mesh: Arc<GreMesh>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = mesh.namespace().unwrap_or_else(|| "default".to_owned());
    let api: Api<GreMesh> = Api::namespaced(ctx.client.clone(), &ns);
    finalizer(&api, FINALIZER, mesh, |event| async {
        match event {
            Finalizer::Apply(mesh) => converge(&mesh, &ctx, &ns).await,
            Finalizer::Cleanup(mesh) => cleanup(&mesh, &ctx, &ns).await,
        }
    })
    .await
    .or_else(|e| match e {
        // A second pass for an object whose finalizer an earlier pass already removed (the
        // cache was one step behind): the object is gone, which is what cleanup wanted.
        kube::runtime::finalizer::Error::RemoveFinalizer(kube::Error::Api(ae))
            if ae.code == 404 =>
        {
            Ok(Action::await_change())
        }
        e => Err(Error::Finalizer(Box::new(e))),
    })
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .round(k8s_openapi::jiff::Unit::Second)
        .unwrap_or_else(|_| k8s_openapi::jiff::Timestamp::now())
        .to_string()
}

fn abandoned(inv: &Inventory, host: &str) -> bool {
    inv.hosts
        .get(host)
        .is_none_or(|h| h.annotations().get(ABANDON).is_some_and(|v| v == "true"))
}

/// The part of the namespace's inventory that one mesh pass needs: this mesh, its live
/// attachments, its hosts and the hosts it is leaving.
fn restrict(full: &Inventory, mesh: &str, extra_hosts: &BTreeSet<String>) -> Inventory {
    let mut inv = Inventory::default();
    if let Some(m) = full.meshes.get(mesh) {
        inv.meshes.insert(mesh.to_owned(), m.clone());
    }
    let members: BTreeSet<&String> = inv
        .meshes
        .values()
        .flat_map(|m| m.spec.hosts.iter().map(|h| &h.name))
        .collect();
    inv.hosts = full
        .hosts
        .iter()
        .filter(|(n, _)| members.contains(n) || extra_hosts.contains(*n))
        .map(|(n, h)| (n.clone(), h.clone()))
        .collect();
    inv.attachments = full
        .attachments
        .iter()
        .filter(|(_, a)| a.spec.mesh == mesh && a.metadata.deletion_timestamp.is_none())
        .map(|(n, a)| (n.clone(), a.clone()))
        .collect();
    inv.secrets = full.secrets.clone();
    inv
}

/// Errors that concern this mesh: its own, its hosts', and those of its attachments.
fn relevant(errors: &[ValidationError], inv: &Inventory, mesh: &str) -> Vec<ValidationError> {
    errors
        .iter()
        .filter(|e| match e.kind {
            "GreMesh" => e.name == mesh,
            "DockerHost" => inv
                .meshes
                .get(mesh)
                .is_some_and(|m| m.spec.hosts.iter().any(|h| h.name == e.name)),
            _ => inv
                .attachments
                .get(&e.name)
                .is_some_and(|a| a.spec.mesh == mesh),
        })
        .cloned()
        .collect()
}

async fn converge(mesh: &GreMesh, ctx: &Context, ns: &str) -> Result<Action, Error> {
    let name = mesh.name_any();
    let started = Instant::now();
    let previous_hosts: BTreeSet<String> = mesh
        .status
        .as_ref()
        .map(|s| s.hosts.iter().map(|h| h.name.clone()).collect())
        .unwrap_or_default();
    let members: BTreeSet<String> = mesh.spec.hosts.iter().map(|h| h.name.clone()).collect();
    let wanted: BTreeSet<String> = members.union(&previous_hosts).cloned().collect();
    let full = cluster::inventory(&ctx.client, ns, &wanted)
        .await
        .map_err(Error::Kube)?;
    let leaving: BTreeSet<String> = previous_hosts
        .difference(&members)
        .filter(|h| !abandoned(&full, h))
        .cloned()
        .collect();
    let mut inv = restrict(&full, &name, &leaving);

    // Validate: attachments with errors are set aside (they get a condition, nothing runs for
    // them); errors of the mesh or its hosts reject the whole mesh.
    let mut errors = relevant(
        &validate(&full).err().map(|r| r.0).unwrap_or_default(),
        &full,
        &name,
    );
    errors.extend(validate(&inv).err().map(|r| r.0).unwrap_or_default());
    errors.sort_by(|a, b| (a.kind, &a.name, &a.field).cmp(&(b.kind, &b.name, &b.field)));
    errors.dedup();
    let bad_attachments: BTreeSet<String> = errors
        .iter()
        .filter(|e| e.kind == "ContainerAttachment")
        .map(|e| e.name.clone())
        .collect();
    inv.attachments.retain(|n, _| !bad_attachments.contains(n));
    let blocking: Vec<ValidationError> = errors
        .iter()
        .filter(|e| e.kind != "ContainerAttachment")
        .cloned()
        .collect();

    let report = if blocking.is_empty() {
        let opts = PassOptions {
            apply: true,
            prune_attachments: true,
            timeouts: ctx.timeouts,
            identity_override: None,
            scope: Some(BTreeSet::from([name.clone()])),
            extra_hosts: leaving,
            observe_deadline: Some(OBSERVE_DEADLINE),
        };
        match run_pass(&inv, &opts, &|_, _| {}).await {
            Ok(report) => Some(report),
            Err(rejected) => {
                errors.extend(rejected.0);
                None
            }
        }
    } else {
        None
    };
    ctx.metrics
        .pass_duration
        .observe(started.elapsed().as_secs_f64());

    let stamp = now();
    let outcome_errors: Vec<ValidationError> = errors.clone();
    let mesh_outcome = match &report {
        Some(r) => Outcome::Pass(r),
        None => Outcome::Rejected(&outcome_errors),
    };
    let new_status = status::mesh_status(mesh, mesh_outcome, mesh.status.as_ref(), &stamp);
    let ready = new_status
        .conditions
        .iter()
        .any(|c| c.type_ == status::READY && c.status == "True");
    write_mesh_status(ctx, ns, mesh, &new_status).await?;
    publish_events(ctx, mesh, report.as_ref(), &errors, &new_status).await;
    write_attachments(ctx, ns, &full, &name, report.as_ref(), &errors, &stamp).await?;
    if let Some(report) = &report {
        write_hosts(ctx, ns, &full, report, &stamp).await?;
        record_metrics(ctx, &name, report, ready);
    } else {
        ctx.metrics.passes.with_label_values(&["rejected"]).inc();
    }

    let key = format!("{ns}/{name}");
    let retry = ctx.backoff(&key, ready || report.is_none());
    Ok(Action::requeue(retry.unwrap_or(ctx.resync)))
}

fn record_metrics(ctx: &Context, mesh: &str, report: &PassReport, ready: bool) {
    let reachable = report
        .hosts
        .iter()
        .filter(|h| h.capabilities.is_some())
        .count();
    ctx.metrics
        .hosts_reachable
        .with_label_values(&[mesh])
        .set(reachable as i64);
    ctx.metrics
        .steps_applied
        .inc_by(report.hosts.iter().map(|h| h.applied as u64).sum());
    for h in &report.hosts {
        if let Some(reason) = h.failure {
            ctx.metrics
                .failures
                .with_label_values(&[reason.metric_label()])
                .inc();
        }
    }
    let result = if ready {
        "converged"
    } else if report.failed() {
        "error"
    } else {
        "not_ready"
    };
    ctx.metrics.passes.with_label_values(&[result]).inc();
}

async fn write_mesh_status(
    ctx: &Context,
    ns: &str,
    mesh: &GreMesh,
    new: &crate::api::GreMeshStatus,
) -> Result<(), Error> {
    if mesh.status.as_ref() == Some(new) {
        return Ok(());
    }
    let api: Api<GreMesh> = Api::namespaced(ctx.client.clone(), ns);
    api.patch_status(
        &mesh.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": new })),
    )
    .await
    .map_err(Error::Kube)?;
    Ok(())
}

async fn publish_events(
    ctx: &Context,
    mesh: &GreMesh,
    report: Option<&PassReport>,
    errors: &[ValidationError],
    new: &crate::api::GreMeshStatus,
) {
    let reference = mesh.object_ref(&());
    let mut events = Vec::new();
    if let Some(report) = report {
        let changed: Vec<String> = report
            .hosts
            .iter()
            .filter(|h| h.applied > 0)
            .map(|h| format!("{}: {} steps", h.host, h.applied))
            .collect();
        if !changed.is_empty() {
            events.push((EventType::Normal, "Applied", changed.join(", ")));
        }
    }
    let degraded_changed = mesh.status.as_ref().map(|s| &s.conditions) != Some(&new.conditions);
    if degraded_changed {
        if let Some(c) = new
            .conditions
            .iter()
            .find(|c| c.type_ == status::DEGRADED && c.status == "True")
        {
            events.push((
                EventType::Warning,
                if errors.is_empty() {
                    "HostFailed"
                } else {
                    "Rejected"
                },
                c.message.clone(),
            ));
        }
    }
    for (type_, reason, note) in events {
        let event = KubeEvent {
            type_,
            reason: reason.to_owned(),
            note: Some(truncate(&note, 1000)),
            action: "Reconcile".to_owned(),
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&event, &reference).await {
            tracing::warn!(error = %e, "publishing event");
        }
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

async fn write_attachments(
    ctx: &Context,
    ns: &str,
    full: &Inventory,
    mesh: &str,
    report: Option<&PassReport>,
    errors: &[ValidationError],
    stamp: &str,
) -> Result<(), Error> {
    let api: Api<ContainerAttachment> = Api::namespaced(ctx.client.clone(), ns);
    for (name, att) in full.attachments.iter().filter(|(_, a)| a.spec.mesh == mesh) {
        if att.metadata.deletion_timestamp.is_some() {
            // Its veth is gone once its host converged without error: let it go.
            let host_ok = report.is_some_and(|r| {
                r.hosts
                    .iter()
                    .any(|h| h.host == att.spec.host && h.error.is_none())
            });
            let host_gone = full
                .hosts
                .get(&att.spec.host)
                .is_none_or(|h| h.annotations().get(ABANDON).is_some_and(|v| v == "true"));
            if host_ok || host_gone {
                remove_finalizer(&api, att).await?;
            }
            continue;
        }
        if !att.finalizers().iter().any(|f| f == FINALIZER) {
            add_finalizer(&api, att).await?;
        }
        let mine: Vec<ValidationError> = errors
            .iter()
            .filter(|e| e.kind == "ContainerAttachment" && &e.name == name)
            .cloned()
            .collect();
        let outcome = match report {
            Some(r) if mine.is_empty() => Outcome::Pass(r),
            _ => Outcome::Rejected(if mine.is_empty() { errors } else { &mine }),
        };
        let new = status::attachment_status(att, outcome, att.status.as_ref(), stamp);
        if att.status.as_ref() != Some(&new) {
            api.patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": new })),
            )
            .await
            .map_err(Error::Kube)?;
        }
    }
    Ok(())
}

async fn add_finalizer<K>(api: &Api<K>, obj: &K) -> Result<(), Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let patch = if obj.finalizers().is_empty() {
        json!([{ "op": "test", "path": "/metadata/finalizers", "value": null }, { "op": "add", "path": "/metadata/finalizers", "value": [FINALIZER] }])
    } else {
        json!([{ "op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER }])
    };
    let patch: json_patch::Patch = serde_json::from_value(patch).map_err(Error::Json)?;
    api.patch(
        &obj.name_any(),
        &PatchParams::default(),
        &Patch::<()>::Json(patch),
    )
    .await
    .map_err(Error::Kube)?;
    Ok(())
}

async fn remove_finalizer<K>(api: &Api<K>, obj: &K) -> Result<(), Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let Some(index) = obj.finalizers().iter().position(|f| f == FINALIZER) else {
        return Ok(());
    };
    let path = format!("/metadata/finalizers/{index}");
    let patch: json_patch::Patch = serde_json::from_value(json!([
        { "op": "test", "path": path, "value": FINALIZER },
        { "op": "remove", "path": path }
    ]))
    .map_err(Error::Json)?;
    match api
        .patch(
            &obj.name_any(),
            &PatchParams::default(),
            &Patch::<()>::Json(patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(Error::Kube(e)),
    }
}

async fn write_hosts(
    ctx: &Context,
    ns: &str,
    full: &Inventory,
    report: &PassReport,
    stamp: &str,
) -> Result<(), Error> {
    let api: Api<DockerHost> = Api::namespaced(ctx.client.clone(), ns);
    for h in &report.hosts {
        let Some(host) = full.hosts.get(&h.host) else {
            continue;
        };
        let new = status::host_status(h, host.metadata.generation, host.status.as_ref(), stamp);
        if host.status.as_ref() != Some(&new) {
            api.patch_status(
                &h.host,
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": new })),
            )
            .await
            .map_err(Error::Kube)?;
        }
    }
    Ok(())
}

/// Removes the mesh's devices from every host that is not abandoned; the finalizer goes only
/// when every such host answered.
async fn cleanup(mesh: &GreMesh, ctx: &Context, ns: &str) -> Result<Action, Error> {
    let name = mesh.name_any();
    let previous: BTreeSet<String> = mesh
        .status
        .as_ref()
        .map(|s| s.hosts.iter().map(|h| h.name.clone()).collect())
        .unwrap_or_default();
    let hosts: BTreeSet<String> = mesh
        .spec
        .hosts
        .iter()
        .map(|h| h.name.clone())
        .chain(previous)
        .collect();
    let full = cluster::inventory(&ctx.client, ns, &hosts)
        .await
        .map_err(Error::Kube)?;
    let visit: BTreeSet<String> = hosts
        .iter()
        .filter(|h| !abandoned(&full, h))
        .cloned()
        .collect();
    let mut inv = restrict(&full, &name, &visit);
    inv.meshes.clear();
    inv.attachments.clear();
    let opts = PassOptions {
        apply: true,
        prune_attachments: true,
        timeouts: ctx.timeouts,
        identity_override: None,
        scope: Some(BTreeSet::from([name.clone()])),
        extra_hosts: visit,
        observe_deadline: Some(OBSERVE_DEADLINE),
    };
    let report = run_pass(&inv, &opts, &|_, _| {})
        .await
        .map_err(|r| Error::Cleanup(r.to_string()))?;
    // A host that failed, or a Docker network still in use, keeps the finalizer.
    let failed: BTreeMap<String, String> = report
        .hosts
        .iter()
        .filter_map(|h| {
            let in_use = h
                .issues
                .iter()
                .find(|i| i.reason == IssueReason::NetworkInUse)
                .map(|i| i.message.clone());
            Some((h.host.clone(), h.error.clone().or(in_use)?))
        })
        .collect();
    if !failed.is_empty() {
        let message = failed
            .iter()
            .map(|(h, e)| format!("{h}: {e}"))
            .collect::<Vec<_>>()
            .join("; ");
        let event = KubeEvent {
            type_: EventType::Warning,
            reason: "CleanupBlocked".to_owned(),
            note: Some(truncate(&format!("{message} (annotate the DockerHost with {ABANDON}=true to let go of a host that is gone)"), 1000)),
            action: "Cleanup".to_owned(),
            secondary: None,
        };
        let _ = ctx.recorder.publish(&event, &mesh.object_ref(&())).await;
        return Err(Error::Cleanup(message));
    }
    let api: Api<ContainerAttachment> = Api::namespaced(ctx.client.clone(), ns);
    for att in full.attachments.values().filter(|a| a.spec.mesh == name) {
        remove_finalizer(&api, att).await?;
    }
    tracing::info!(mesh = %name, hosts = report.hosts.len(), "mesh removed from its hosts");
    Ok(Action::await_change())
}

/// Maps a changed object to the retry delay: `None` when the mesh is fine (use the resync
/// period), else a delay doubling with every consecutive failure.
pub fn backoff_delay(failures: u32, resync: Duration) -> Duration {
    let base = Duration::from_secs(2);
    base.saturating_mul(1 << failures.min(10)).min(resync)
}
