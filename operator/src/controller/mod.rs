//! `gremesh operator`: the Kubernetes controller. It watches `GreMesh`, `ContainerAttachment`
//! and `DockerHost` objects and, for each mesh, runs the same engine pass as `gremesh apply`
//! (see [`mesh`]), then writes statuses and Events.
//!
//! - A mesh is reconciled when its spec, finalizers or deletion change, when one of its
//!   attachments or hosts changes spec or is deleted, and every resync period (drift healing).
//!   Status-only changes trigger nothing, so the operator's own status writes cause no passes.
//! - Failures back off per mesh (2 s doubling up to the resync period).
//! - With leader election on, only the replica holding the Lease reconciles; one that loses
//!   the Lease exits so it can never act beside the new leader.

pub mod cluster;
pub mod docker_events;
pub mod leader;
pub mod mesh;
pub mod metrics;
pub mod status;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource, ResourceExt};

use crate::api::{ContainerAttachment, DockerHost, GreMesh};
use crate::ssh::Timeouts;

/// Everything a reconcile needs.
pub struct Context {
    /// API client.
    pub client: Client,
    /// Publishes Kubernetes Events.
    pub recorder: Recorder,
    /// Metrics.
    pub metrics: metrics::Metrics,
    /// Resync period of a healthy mesh.
    pub resync: Duration,
    /// SSH time limits.
    pub timeouts: Timeouts,
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    /// A context around a client.
    pub fn new(
        client: Client,
        recorder: Recorder,
        metrics: metrics::Metrics,
        resync: Duration,
        timeouts: Timeouts,
    ) -> Self {
        Self {
            client,
            recorder,
            metrics,
            resync,
            timeouts,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Records the outcome of a pass for `key`; returns the retry delay when it failed.
    pub fn backoff(&self, key: &str, ok: bool) -> Option<Duration> {
        let mut failures = self.failures.lock().expect("backoff lock");
        if ok {
            failures.remove(key);
            return None;
        }
        let n = failures.entry(key.to_owned()).or_insert(0);
        *n += 1;
        Some(mesh::backoff_delay(*n - 1, self.resync))
    }
}

/// Errors of one reconcile.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The API server refused or failed a request.
    #[error("kubernetes API: {0}")]
    Kube(#[source] kube::Error),
    /// The finalizer machinery failed (its message includes the inner error).
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    /// Cleanup could not reach every host yet.
    #[error("cleanup incomplete: {0}")]
    Cleanup(String),
    /// A patch could not be built.
    #[error("building a patch: {0}")]
    Json(#[source] serde_json::Error),
}

/// Operator settings (from the command line).
#[derive(Clone, Debug)]
pub struct Settings {
    /// Watch only this namespace (default: all).
    pub namespace: Option<String>,
    /// Resync period.
    pub resync: Duration,
    /// SSH time limits.
    pub timeouts: Timeouts,
    /// Address of the metrics and health endpoints.
    pub listen: SocketAddr,
    /// Lease for leader election (`None`: no election, a single replica).
    pub lease: Option<LeaseSettings>,
    /// Follow Docker's event stream on every host to re-attach restarted containers at once.
    pub docker_events: bool,
}

/// Leader election settings.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This replica's identity (the pod name).
    pub identity: String,
    /// Lease duration.
    pub duration: Duration,
}

fn error_policy(mesh: Arc<GreMesh>, error: &Error, ctx: Arc<Context>) -> Action {
    let key = format!(
        "{}/{}",
        mesh.namespace().unwrap_or_default(),
        mesh.name_any()
    );
    tracing::warn!(mesh = %mesh.name_any(), error = %error, "reconcile failed");
    Action::requeue(ctx.backoff(&key, false).unwrap_or(ctx.resync))
}

/// Hash of what makes an object worth a new pass: spec (through `generation`), deletion and
/// finalizers. Status writes change none of these.
fn trigger_hash<K: Resource>(obj: &K) -> Option<u64> {
    let meta = obj.meta();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    meta.generation.hash(&mut h);
    meta.deletion_timestamp.is_some().hash(&mut h);
    meta.finalizers.hash(&mut h);
    Some(h.finish())
}

/// Like [`trigger_hash`], plus the abandon annotation, which changes what cleanup waits for.
fn host_trigger_hash(host: &DockerHost) -> Option<u64> {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    trigger_hash(host).hash(&mut h);
    host.annotations().get(mesh::ABANDON).hash(&mut h);
    Some(h.finish())
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = kube::core::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Runs the operator until a shutdown signal (or loss of the Lease).
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let client = Client::try_default().await?;
    let metrics = metrics::Metrics::new();
    let ready = Arc::new(AtomicBool::new(false));
    tokio::spawn({
        let (metrics, ready, listen) = (metrics.clone(), ready.clone(), settings.listen);
        async move {
            if let Err(e) = metrics::serve(listen, metrics, ready).await {
                tracing::error!(error = %e, %listen, "metrics endpoint failed");
            }
        }
    });
    client.apiserver_version().await?;
    ready.store(true, Ordering::Relaxed);

    let elector = settings.lease.as_ref().map(|l| {
        leader::Elector::new(
            Api::<Lease>::namespaced(client.clone(), &l.namespace),
            &l.name,
            &l.identity,
            l.duration,
        )
    });
    if let Some(e) = &elector {
        e.acquire().await;
    }

    let reporter = Reporter {
        controller: "gremesh".into(),
        instance: settings.lease.as_ref().map(|l| l.identity.clone()),
    };
    let ctx = Arc::new(Context::new(
        client.clone(),
        Recorder::new(client.clone(), reporter),
        metrics,
        settings.resync,
        settings.timeouts,
    ));
    let ns = settings.namespace.as_deref();
    let wc = watcher::Config::default();

    let (reader, writer) = reflector::store::<GreMesh>();
    let meshes = watcher(api::<GreMesh>(&client, ns), wc.clone())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(trigger_hash, Default::default());
    let attachments = watcher(api::<ContainerAttachment>(&client, ns), wc.clone())
        .default_backoff()
        .touched_objects()
        .predicate_filter(trigger_hash, Default::default());
    let hosts = watcher(api::<DockerHost>(&client, ns), wc.clone())
        .default_backoff()
        .touched_objects()
        .predicate_filter(host_trigger_hash, Default::default());
    let store = reader.clone();
    let events = if settings.docker_events {
        futures::future::Either::Left(docker_events::follow(
            client.clone(),
            reader.clone(),
            settings.namespace.clone(),
            settings.timeouts,
        ))
    } else {
        futures::future::Either::Right(futures::stream::empty())
    };

    let controller = Controller::for_stream(meshes, reader)
        .watches_stream(attachments, |a: ContainerAttachment| {
            a.namespace()
                .map(|ns| ObjectRef::<GreMesh>::new(&a.spec.mesh).within(&ns))
        })
        .watches_stream(hosts, move |h: DockerHost| {
            let ns = h.namespace();
            store
                .state()
                .into_iter()
                .filter(|m| {
                    m.namespace() == ns && m.spec.hosts.iter().any(|x| x.name == h.name_any())
                })
                .map(|m| ObjectRef::from_obj(&*m))
                .collect::<Vec<_>>()
        })
        .reconcile_on(events)
        .shutdown_on_signal()
        .run(mesh::reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((obj, _)) => tracing::debug!(mesh = %obj.name, "reconciled"),
                Err(e) => tracing::debug!(error = %e, "reconcile error"),
            }
        });

    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        namespace = ns.unwrap_or("*"),
        "operator started"
    );
    match &elector {
        Some(e) => {
            tokio::select! {
                _ = controller => {}
                _ = e.hold() => {
                    anyhow::bail!("lost the leader lease; exiting so that only one replica reconciles");
                }
            }
            e.release().await;
        }
        None => controller.await,
    }
    tracing::info!("operator stopped");
    Ok(())
}
