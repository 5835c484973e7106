//! Following Docker's event stream on every host, so that a container that starts (again) —
//! after `docker restart`, `docker stop && docker start`, `docker rm -f` and a new container of
//! the same name, or a daemon restart — is re-attached at once instead of at the next resync.
//!
//! One follower per `DockerHost` that some mesh uses runs the fixed command below over its own
//! SSH connection (a second one: the stream holds its session open, and a host may allow only
//! one session per connection). Every container start triggers a pass of the meshes that
//! include the host. The periodic resync stays the safety net: a follower that cannot connect
//! retries with back-off and never blocks a pass.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::Stream;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, ResourceExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::cluster;
use crate::api::{DockerHost, GreMesh};
use crate::engine::{target, PassOptions};
use crate::ssh::{Connection, Timeouts};

/// The event stream command: container starts only, one line each. Takes no input.
pub const EVENTS_SCRIPT: &str =
    "exec docker events --filter type=container --filter event=start --format '{{.ID}}'\n";

/// How often the set of followed hosts is brought in line with the cluster.
const REFRESH: Duration = Duration::from_secs(10);

/// A followed host: namespace and name.
type HostKey = (String, String);

/// Starts following; returns the stream of meshes to reconcile.
pub fn follow(
    client: Client,
    meshes: Store<GreMesh>,
    namespace: Option<String>,
    timeouts: Timeouts,
) -> impl Stream<Item = ObjectRef<GreMesh>> {
    let (started_tx, mut started_rx) = mpsc::channel::<HostKey>(256);
    let (out_tx, out_rx) = mpsc::channel::<ObjectRef<GreMesh>>(256);
    tokio::spawn(supervise(
        client,
        meshes.clone(),
        namespace,
        timeouts,
        started_tx,
    ));
    tokio::spawn(async move {
        while let Some((ns, host)) = started_rx.recv().await {
            for mesh in meshes.state() {
                if mesh.namespace().as_deref() == Some(ns.as_str())
                    && mesh.spec.hosts.iter().any(|h| h.name == host)
                {
                    tracing::debug!(host = %host, mesh = %mesh.name_any(), "container started");
                    let _ = out_tx.send(ObjectRef::from_obj(&*mesh)).await;
                }
            }
        }
    });
    tokio_stream_from(out_rx)
}

fn tokio_stream_from<T: Send + 'static>(mut rx: mpsc::Receiver<T>) -> impl Stream<Item = T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Keeps one follower per host used by a mesh, restarting followers whose host spec changed.
async fn supervise(
    client: Client,
    meshes: Store<GreMesh>,
    namespace: Option<String>,
    timeouts: Timeouts,
    started: mpsc::Sender<HostKey>,
) {
    let mut followers: BTreeMap<HostKey, (String, JoinHandle<()>)> = BTreeMap::new();
    loop {
        let wanted: BTreeSet<HostKey> = meshes
            .state()
            .iter()
            .filter(|m| namespace.is_none() || m.namespace() == namespace)
            .flat_map(|m| {
                let ns = m.namespace().unwrap_or_default();
                m.spec
                    .hosts
                    .iter()
                    .map(move |h| (ns.clone(), h.name.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        followers.retain(|key, (_, task)| {
            let keep = wanted.contains(key) && !task.is_finished();
            if !keep {
                task.abort();
            }
            keep
        });
        for key in wanted {
            let api: Api<DockerHost> = Api::namespaced(client.clone(), &key.0);
            let Ok(Some(host)) = api.get_opt(&key.1).await else {
                continue;
            };
            let fingerprint = serde_json::to_string(&host.spec).unwrap_or_default();
            if followers.get(&key).is_some_and(|(f, _)| *f == fingerprint) {
                continue;
            }
            if let Some((_, old)) = followers.remove(&key) {
                old.abort();
            }
            let task = tokio::spawn(follow_host(
                client.clone(),
                key.clone(),
                timeouts,
                started.clone(),
            ));
            followers.insert(key, (fingerprint, task));
        }
        tokio::time::sleep(REFRESH).await;
    }
}

/// Follows one host's events until aborted, reconnecting with back-off.
async fn follow_host(
    client: Client,
    key: HostKey,
    timeouts: Timeouts,
    started: mpsc::Sender<HostKey>,
) {
    let mut delay = Duration::from_secs(1);
    loop {
        let attempt = async {
            let inv = cluster::inventory(&client, &key.0, &BTreeSet::from([key.1.clone()]))
                .await
                .map_err(|e| e.to_string())?;
            let target =
                target(&inv, &key.1, &PassOptions::default()).map_err(|e| e.to_string())?;
            let conn = Connection::open(&target, timeouts)
                .await
                .map_err(|e| e.to_string())?;
            let (lines_tx, mut lines_rx) = mpsc::channel::<String>(64);
            let relay = async {
                while lines_rx.recv().await.is_some() {
                    if started.send(key.clone()).await.is_err() {
                        break;
                    }
                }
            };
            tracing::debug!(host = %key.1, "following docker events");
            let (result, ()) = futures::join!(conn.follow_lines(EVENTS_SCRIPT, lines_tx), relay);
            conn.close().await;
            result.map_err(|e| e.to_string())
        };
        match attempt.await {
            Ok(()) => delay = Duration::from_secs(1),
            Err(e) => {
                tracing::debug!(host = %key.1, error = %e, retry_in = ?delay, "docker events stream down");
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
        // A stream that ended (daemon restart) also means containers may need re-attaching.
        let _ = started.send(key.clone()).await;
        tokio::time::sleep(delay).await;
    }
}
