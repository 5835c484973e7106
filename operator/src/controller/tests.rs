//! Controller tests: the exact API traffic of reconciles (against a mock API service), and the
//! pure status rules.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use http_body_util::BodyExt;
use kube::client::Body;
use kube::runtime::events::{Recorder, Reporter};
use kube::Client;
use serde_json::{json, Value};

use super::status::{self, Outcome};
use super::{mesh, metrics, Context};
use crate::api::GreMesh;
use crate::engine::{HostReport, MeshHostReport, MeshReport, PassReport};
use crate::ssh::Timeouts;

/// One request the operator sent: method, path with query, JSON body.
type Seen = (String, String, Value);

/// Serves requests with `respond` and records them, until the client is dropped.
fn mock(
    respond: impl Fn(&str, &str, &Value) -> Value + Send + 'static,
) -> (Client, Arc<Mutex<Vec<Seen>>>) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            let method = request.method().to_string();
            let path = request
                .uri()
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_default();
            let bytes = request.into_body().collect().await.unwrap().to_bytes();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let reply = respond(&method, &path, &body);
            log.lock().unwrap().push((method, path, body));
            // a `Status` reply carries its code as the HTTP status, as the API server does
            let code = match (&reply["kind"], reply["code"].as_u64()) {
                (Value::String(k), Some(c)) if k == "Status" => c as u16,
                _ => 200,
            };
            send.send_response(
                Response::builder()
                    .status(code)
                    .body(Body::from(serde_json::to_vec(&reply).unwrap()))
                    .unwrap(),
            );
        }
    });
    (Client::new(service, "default"), seen)
}

fn context(client: Client) -> Arc<Context> {
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "gremesh".into(),
            instance: None,
        },
    );
    Arc::new(Context::new(
        client,
        recorder,
        metrics::Metrics::new(),
        Duration::from_secs(60),
        Timeouts::default(),
    ))
}

fn mesh_json(finalizers: &[&str], status: Value, deleting: bool) -> Value {
    let mut meta = json!({"name": "m1", "namespace": "default", "uid": "u1", "generation": 2, "resourceVersion": "7", "finalizers": finalizers});
    if deleting {
        meta["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    }
    json!({
        "apiVersion": "gremesh.io/v1alpha1", "kind": "GreMesh", "metadata": meta,
        "spec": {"hosts": [{"name": "host-x"}], "key": 42, "network": "10.10.0.0/16", "encapsulation": "vxlan"},
        "status": status,
    })
}

fn list(kind: &str, items: Vec<Value>) -> Value {
    json!({"apiVersion": "gremesh.io/v1alpha1", "kind": format!("{kind}List"), "metadata": {"resourceVersion": "1"}, "items": items})
}

/// Lists of the namespace with no hosts and no attachments; other requests echo the mesh.
fn respond_empty(mesh: Value) -> impl Fn(&str, &str, &Value) -> Value {
    move |method, path, _| match (method, path) {
        ("GET", p) if p.contains("/dockerhosts") => list("DockerHost", vec![]),
        ("GET", p) if p.contains("/containerattachments") => list("ContainerAttachment", vec![]),
        ("GET", p) if p.contains("/gremeshes") => list("GreMesh", vec![mesh.clone()]),
        ("POST", p) if p.contains("/events") => {
            json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"}, "eventTime": "2026-01-01T00:00:00.000000Z"})
        }
        _ => mesh.clone(),
    }
}

fn paths(seen: &Arc<Mutex<Vec<Seen>>>) -> Vec<String> {
    seen.lock()
        .unwrap()
        .iter()
        .map(|(m, p, _)| format!("{m} {}", p.split('?').next().unwrap()))
        .collect()
}

#[tokio::test]
async fn new_mesh_gets_the_finalizer_first_and_nothing_else() {
    let obj = mesh_json(&[], Value::Null, false);
    let (client, seen) = mock(respond_empty(obj.clone()));
    let m: GreMesh = serde_json::from_value(obj).unwrap();
    mesh::reconcile(Arc::new(m), context(client)).await.unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].0, "PATCH");
    assert_eq!(
        seen[0].1.split('?').next().unwrap(),
        "/apis/gremesh.io/v1alpha1/namespaces/default/gremeshes/m1"
    );
    assert_eq!(
        seen[0].2,
        json!([{"op": "test", "path": "/metadata/finalizers", "value": null}, {"op": "add", "path": "/metadata/finalizers", "value": ["gremesh.io/cleanup"]}])
    );
}

#[tokio::test]
async fn rejected_mesh_reads_then_writes_status_and_one_warning_event_and_runs_no_pass() {
    let obj = mesh_json(&["gremesh.io/cleanup"], Value::Null, false);
    let (client, seen) = mock(respond_empty(obj.clone()));
    let m: GreMesh = serde_json::from_value(obj).unwrap();
    mesh::reconcile(Arc::new(m), context(client)).await.unwrap();
    assert_eq!(
        paths(&seen),
        [
            "GET /apis/gremesh.io/v1alpha1/namespaces/default/dockerhosts",
            "GET /apis/gremesh.io/v1alpha1/namespaces/default/gremeshes",
            "GET /apis/gremesh.io/v1alpha1/namespaces/default/containerattachments",
            "PATCH /apis/gremesh.io/v1alpha1/namespaces/default/gremeshes/m1/status",
            "POST /apis/events.k8s.io/v1/namespaces/default/events",
        ]
    );
    let seen = seen.lock().unwrap().clone();
    let status = &seen[3].2["status"];
    let ready = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap();
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "Rejected");
    assert!(
        ready["message"]
            .as_str()
            .unwrap()
            .contains("spec.hosts[0].name: unknown DockerHost \"host-x\""),
        "{ready}"
    );
    assert_eq!(status["observedGeneration"], 2);
    assert_eq!(seen[4].2["type"], "Warning");
}

#[tokio::test]
async fn unchanged_status_is_not_written_again() {
    // First pass computes the status; a second reconcile of the object carrying that status
    // must only read.
    let obj = mesh_json(&["gremesh.io/cleanup"], Value::Null, false);
    let (client, seen) = mock(respond_empty(obj.clone()));
    let m: GreMesh = serde_json::from_value(obj).unwrap();
    mesh::reconcile(Arc::new(m), context(client)).await.unwrap();
    let written = seen.lock().unwrap()[3].2["status"].clone();

    let obj = mesh_json(&["gremesh.io/cleanup"], written, false);
    let (client, seen) = mock(respond_empty(obj.clone()));
    let m: GreMesh = serde_json::from_value(obj).unwrap();
    mesh::reconcile(Arc::new(m), context(client)).await.unwrap();
    assert!(
        paths(&seen).iter().all(|p| p.starts_with("GET ")),
        "{:?}",
        paths(&seen)
    );
}

#[tokio::test]
async fn deleting_a_mesh_whose_hosts_are_gone_removes_the_finalizer() {
    let obj = mesh_json(&["gremesh.io/cleanup"], Value::Null, true);
    let (client, seen) = mock(respond_empty(obj.clone()));
    let m: GreMesh = serde_json::from_value(obj).unwrap();
    mesh::reconcile(Arc::new(m), context(client)).await.unwrap();
    let seen = seen.lock().unwrap().clone();
    let last = seen.last().unwrap();
    assert_eq!(last.0, "PATCH");
    assert_eq!(
        last.1.split('?').next().unwrap(),
        "/apis/gremesh.io/v1alpha1/namespaces/default/gremeshes/m1"
    );
    assert_eq!(
        last.2,
        json!([{"op": "test", "path": "/metadata/finalizers/0", "value": "gremesh.io/cleanup"}, {"op": "remove", "path": "/metadata/finalizers/0"}])
    );
}

#[tokio::test]
async fn a_finalizer_already_gone_with_its_object_is_not_an_error() {
    let obj = mesh_json(&["gremesh.io/cleanup"], Value::Null, true);
    let echo = respond_empty(obj.clone());
    let (client, seen) = mock(move |method, path, body| {
        if method == "PATCH" {
            json!({"apiVersion": "v1", "kind": "Status", "status": "Failure", "reason": "NotFound", "code": 404, "message": "gremeshes.gremesh.io \"m1\" not found"})
        } else {
            echo(method, path, body)
        }
    });
    let m: GreMesh = serde_json::from_value(obj).unwrap();
    mesh::reconcile(Arc::new(m), context(client)).await.unwrap();
    assert_eq!(seen.lock().unwrap().last().unwrap().0, "PATCH");
}

fn report(host_error: Option<&str>) -> PassReport {
    PassReport {
        hosts: vec![HostReport {
            host: "host-x".into(),
            converged: host_error.is_none(),
            error: host_error.map(str::to_owned),
            capabilities: host_error.is_none().then(Default::default),
            meshes: vec![MeshHostReport {
                mesh: "m1".into(),
                subnet: "10.10.1.0/24".parse().unwrap(),
                gateway: "10.10.1.1".parse().unwrap(),
                tunnels_up: 0,
                tunnels_expected: 0,
                bridge: "gm-1".into(),
                peers_up: vec![],
                peers_unanswered: vec![],
            }],
            ..HostReport::default()
        }],
        meshes: vec![MeshReport {
            mesh: "m1".into(),
            mtu: 1450,
            encapsulation: crate::api::Encapsulation::Vxlan,
            loop_prevention: crate::api::LoopPrevention::Isolated,
            ready: host_error.is_none(),
            error: None,
        }],
    }
}

#[test]
fn status_names_the_failing_host_and_keeps_transition_times() {
    let m: GreMesh = serde_json::from_value(mesh_json(&[], Value::Null, false)).unwrap();
    let ok = status::mesh_status(&m, Outcome::Pass(&report(None)), None, "t1");
    assert_eq!(ok.hosts_ready.as_deref(), Some("1/1"));
    assert_eq!(ok.mtu, Some(1450));
    let again = status::mesh_status(&m, Outcome::Pass(&report(None)), Some(&ok), "t2");
    assert_eq!(again, ok, "a converged mesh must get an identical status");

    let down = status::mesh_status(
        &m,
        Outcome::Pass(&report(Some("cannot connect to 10.0.0.9:22: refused"))),
        Some(&ok),
        "t3",
    );
    let degraded = down
        .conditions
        .iter()
        .find(|c| c.type_ == "Degraded")
        .unwrap();
    assert_eq!(degraded.status, "True");
    assert_eq!(degraded.reason, "HostUnreachable");
    assert!(
        degraded.message.starts_with("host-x: cannot connect"),
        "{}",
        degraded.message
    );
    assert_eq!(degraded.last_transition_time.as_deref(), Some("t3"));
    assert_eq!(
        down.hosts[0].message,
        "cannot connect to 10.0.0.9:22: refused"
    );
    assert_eq!(down.hosts_ready.as_deref(), Some("0/1"));
}

#[test]
fn host_status_reason_follows_the_kind_of_failure_not_its_wording() {
    use crate::engine::FailureReason;
    let failed = |failure: FailureReason, message: &str| HostReport {
        host: "host-x".into(),
        error: Some(message.into()),
        failure: Some(failure),
        ..HostReport::default()
    };
    let reason = |h: &HostReport| {
        status::host_status(h, Some(1), None, "t1").conditions[0]
            .reason
            .clone()
    };
    assert_eq!(
        reason(&failed(
            FailureReason::HostKeyMismatch,
            "the host presented SHA256:x"
        )),
        "HostKeyMismatch"
    );
    assert_eq!(
        reason(&failed(
            FailureReason::AuthFailed,
            "host key mismatch in a user name"
        )),
        "AuthFailed"
    );
    assert_eq!(
        reason(&failed(FailureReason::Unreachable, "host key mismatch")),
        "Unreachable",
        "the message's wording must not decide the reason"
    );
    let ok = status::host_status(
        &HostReport {
            host: "host-x".into(),
            capabilities: Some(Default::default()),
            ..HostReport::default()
        },
        Some(1),
        None,
        "t1",
    );
    assert!(ok.reachable);
    assert_eq!(ok.conditions[0].reason, "Reachable");
}
