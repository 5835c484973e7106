//! The engine: one pass over every host of an inventory — observe, plan, apply — with hosts
//! handled concurrently, each over its own SSH connection.
//!
//! Both front doors (`gremesh apply`/`plan` and the operator) call [`run_pass`]; neither has
//! logic the other lacks.
//!
//! Caveat: with an automatic MTU, the mesh MTU depends on every member's underlay MTU, so
//! planning waits until every host was probed or its connection timed out (bounded by the
//! connect timeout). Pin `spec.mtu` to take this wait out of the picture.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use futures::future::join_all;
use ipnet::Ipv4Net;
use serde::Serialize;

use crate::desired::{self, DesiredError, MeshLayout, MeshOnHost};
use crate::manifest::Inventory;
use crate::observe::{parse_probe, probe_with_health, HostState, ProbeError};
use crate::plan::{gre_matches, plan_host, vxlan_matches, Issue, IssueReason, Plan, Scope};
use crate::script::{self, apply_script, PROBE_MARK};
use crate::ssh::{Connection, SshError, Target, Timeouts};
use crate::validate::{validate, Rejected};

/// What a pass does.
#[derive(Clone, Debug)]
pub struct PassOptions {
    /// Change hosts (`false`: only plan).
    pub apply: bool,
    /// Remove attachments of in-scope meshes that the inventory does not list.
    pub prune_attachments: bool,
    /// SSH time limits.
    pub timeouts: Timeouts,
    /// Private key used for every host instead of the referenced Secrets.
    pub identity_override: Option<Vec<u8>>,
    /// Meshes this pass is responsible for (default: every mesh of the inventory). A mesh in
    /// scope but absent from the inventory has all its devices removed from the hosts visited.
    pub scope: Option<BTreeSet<String>>,
    /// Hosts to visit besides the members of the inventory's meshes (hosts that left a mesh or
    /// whose mesh is being deleted, so its devices are removed from them).
    pub extra_hosts: BTreeSet<String>,
    /// How long planning waits for slow hosts' probes before laying out meshes without them
    /// (their last known underlay MTU and subnet from status stand in). `None`: wait for all.
    pub observe_deadline: Option<std::time::Duration>,
}

impl Default for PassOptions {
    fn default() -> Self {
        Self {
            apply: true,
            prune_attachments: false,
            timeouts: Timeouts::default(),
            identity_override: None,
            scope: None,
            extra_hosts: BTreeSet::new(),
            observe_deadline: None,
        }
    }
}

/// Progress of one host, reported while a pass runs.
#[derive(Clone, Debug)]
pub enum Progress {
    /// Connecting and probing.
    Observing,
    /// Plan computed.
    Planned {
        /// Number of steps.
        steps: usize,
    },
    /// Sending the plan.
    Applying {
        /// Number of steps.
        steps: usize,
    },
    /// Finished (successfully or not).
    Done,
}

/// The outcome of a pass on one host.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HostReport {
    /// Host name.
    pub host: String,
    /// Steps planned (human-readable, with their commands).
    pub planned: Vec<String>,
    /// Steps applied successfully.
    pub applied: usize,
    /// Whether the host matches the spec at the end of the pass.
    pub converged: bool,
    /// Why the host failed, when it did (nothing after the failing step ran).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The kind of that failure, for machines (condition reasons, metric labels).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<FailureReason>,
    /// Objects that could not converge (foreign devices, stopped containers...).
    pub issues: Vec<IssueReport>,
    /// Per-mesh state of this host after the pass.
    pub meshes: Vec<MeshHostReport>,
    /// SSH scripts run on the host (round trips).
    pub round_trips: u32,
    /// Wall time for this host.
    #[serde(with = "millis")]
    pub duration: Duration,
    /// Capabilities read by the probe.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<crate::api::host::HostCapabilities>,
    /// Container ID and address per attachment actually attached.
    pub attachments: Vec<AttachmentReport>,
}

/// An issue, serializable.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IssueReport {
    /// Mesh.
    pub mesh: String,
    /// Attachment, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attachment: Option<String>,
    /// Reason.
    pub reason: IssueReason,
    /// Message.
    pub message: String,
}

impl From<&Issue> for IssueReport {
    fn from(i: &Issue) -> Self {
        Self {
            mesh: i.mesh.clone(),
            attachment: i.attachment.clone(),
            reason: i.reason,
            message: i.message.clone(),
        }
    }
}

/// Why a pass could not converge one host. Nothing after the failure ran on that host.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    /// The inventory cannot say how to reach the host (its key Secret is missing).
    #[error("{0}")]
    Config(String),
    /// The SSH connection could not be made (unreachable, host key mismatch, login refused).
    #[error(transparent)]
    Connect(SshError),
    /// The read-only probe did not run to its end.
    #[error("probe: {0}")]
    ProbeRun(SshError),
    /// The probe's output could not be read.
    #[error(transparent)]
    ProbeOutput(ProbeError),
    /// One of the host's meshes cannot be laid out on it (its kernel lacks the encapsulation).
    #[error(transparent)]
    Desired(DesiredError),
    /// The apply round trip itself failed (connection lost, time limit).
    #[error(transparent)]
    ApplyRun(SshError),
    /// A step of the plan failed on the host; the steps after it did not run.
    #[error("step {number} of {total} failed: {step}: {detail}")]
    Step {
        /// 1-based number of the failing step.
        number: usize,
        /// Steps in the plan.
        total: usize,
        /// The step, as `describe` prints it.
        step: String,
        /// What the failing command printed.
        detail: String,
    },
    /// The probe that closes the apply round trip could not be read.
    #[error("after apply: {0}")]
    AfterApply(ProbeError),
}

/// The kind of a [`HostError`], as condition reasons and metric labels name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum FailureReason {
    /// The inventory lacks what is needed to reach the host.
    Misconfigured,
    /// No SSH connection (refused, timed out, name not resolved).
    Unreachable,
    /// The host presented a key other than the pinned one.
    HostKeyMismatch,
    /// The host refused the private key.
    AuthFailed,
    /// The probe did not run or its output was unreadable.
    ProbeFailed,
    /// The host's kernel lacks the mesh's encapsulation.
    Unsupported,
    /// Applying the plan failed.
    ApplyFailed,
}

impl FailureReason {
    /// The `reason` label of the `gremesh_host_failures_total` metric.
    pub fn metric_label(self) -> &'static str {
        match self {
            FailureReason::Misconfigured => "misconfigured",
            FailureReason::Unreachable => "unreachable",
            FailureReason::HostKeyMismatch => "host_key_mismatch",
            FailureReason::AuthFailed => "auth_failed",
            FailureReason::ProbeFailed => "probe_failed",
            FailureReason::Unsupported => "unsupported",
            FailureReason::ApplyFailed => "apply_failed",
        }
    }
}

impl HostError {
    /// The kind of this failure.
    pub fn reason(&self) -> FailureReason {
        match self {
            HostError::Config(_) => FailureReason::Misconfigured,
            HostError::Connect(SshError::HostKeyMismatch { .. }) => FailureReason::HostKeyMismatch,
            HostError::Connect(SshError::Auth { .. }) => FailureReason::AuthFailed,
            HostError::Connect(_) => FailureReason::Unreachable,
            HostError::ProbeRun(_) | HostError::ProbeOutput(_) => FailureReason::ProbeFailed,
            HostError::Desired(DesiredError::Unsupported { .. }) => FailureReason::Unsupported,
            HostError::Desired(_) => FailureReason::Misconfigured,
            HostError::ApplyRun(_) | HostError::Step { .. } | HostError::AfterApply(_) => {
                FailureReason::ApplyFailed
            }
        }
    }
}

impl HostReport {
    /// Records `error` as this host's failure.
    fn fail(&mut self, error: &HostError) {
        self.error = Some(error.to_string());
        self.failure = Some(error.reason());
    }
}

/// One mesh on one host after the pass.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshHostReport {
    /// Mesh name.
    pub mesh: String,
    /// Host subnet.
    pub subnet: Ipv4Net,
    /// Gateway on the bridge.
    pub gateway: std::net::Ipv4Addr,
    /// Tunnels present, configured and up.
    pub tunnels_up: u32,
    /// Tunnels expected.
    pub tunnels_expected: u32,
    /// Bridge name.
    pub bridge: String,
    /// Peers whose tunnel is up.
    pub peers_up: Vec<String>,
    /// Peers whose tunnel device is up but that did not answer across it (the underlay may
    /// block the encapsulation).
    pub peers_unanswered: Vec<String>,
}

/// An attachment as found after the pass.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AttachmentReport {
    /// Attachment name.
    pub name: String,
    /// Mesh name.
    pub mesh: String,
    /// Container ID attached.
    pub container_id: String,
    /// Address configured.
    pub address: Ipv4Net,
}

/// A mesh-wide result.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshReport {
    /// Mesh name.
    pub mesh: String,
    /// MTU in force.
    pub mtu: u32,
    /// Encapsulation in force.
    pub encapsulation: crate::api::Encapsulation,
    /// Loop prevention in force.
    pub loop_prevention: crate::api::LoopPrevention,
    /// Every host converged and every tunnel up.
    pub ready: bool,
    /// Why the mesh could not be laid out, if it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The outcome of a whole pass.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PassReport {
    /// Per host, sorted by name.
    pub hosts: Vec<HostReport>,
    /// Per mesh.
    pub meshes: Vec<MeshReport>,
}

impl PassReport {
    /// Whether any host failed or a mesh could not be laid out.
    pub fn failed(&self) -> bool {
        self.hosts.iter().any(|h| h.error.is_some())
            || self.meshes.iter().any(|m| m.error.is_some())
    }

    /// Whether any object is blocked (a foreign device in the way, a container that is not
    /// running, a conflict...): the hosts did what they could, but not all of the spec.
    pub fn blocked(&self) -> bool {
        self.hosts.iter().any(|h| !h.issues.is_empty())
    }
}

mod millis {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
}

/// Mesh layouts of a pass and their report rows.
#[derive(Clone, Default)]
struct Layouts {
    layouts: BTreeMap<String, MeshLayout>,
    reports: Vec<MeshReport>,
}

/// Lays out every mesh of the inventory from the states observed so far.
fn lay_out(inv: &Inventory, states: &BTreeMap<String, HostState>) -> Layouts {
    let mut out = Layouts::default();
    for (name, mesh) in &inv.meshes {
        let (mtu, error) = match desired::layout(inv, name, mesh, states) {
            Ok(layout) => {
                let mtu = layout.mtu;
                out.layouts.insert(name.clone(), layout);
                (mtu, None)
            }
            Err(e) => (0, Some(e.to_string())),
        };
        out.reports.push(MeshReport {
            mesh: name.clone(),
            mtu,
            encapsulation: mesh.spec.encapsulation_or_default(),
            loop_prevention: mesh.spec.loop_prevention_or_default(),
            ready: false,
            error,
        });
    }
    out
}

/// Per-host working state during a pass.
struct HostWork {
    report: HostReport,
    started: Instant,
    conn: Option<Connection>,
    state: Option<HostState>,
}

/// Runs one pass. Validation failures return `Err` before any host is contacted.
pub async fn run_pass(
    inv: &Inventory,
    opts: &PassOptions,
    progress: &(dyn Fn(&str, Progress) + Sync),
) -> Result<PassReport, Rejected> {
    validate(inv)?;
    let meshes_in_scope: BTreeSet<String> = opts
        .scope
        .clone()
        .unwrap_or_else(|| inv.meshes.keys().cloned().collect());
    let scope = Scope {
        claimable: desired::claimable(inv, &meshes_in_scope),
        meshes: meshes_in_scope,
        prune_attachments: opts.prune_attachments,
    };
    let hosts: Vec<String> = inv
        .meshes
        .values()
        .flat_map(|m| m.spec.hosts.iter().map(|h| h.name.clone()))
        .chain(opts.extra_hosts.iter().cloned())
        .collect::<BTreeSet<String>>()
        .into_iter()
        .collect();

    // Observe every host concurrently. Layouts (MTU, subnets) are computed once every host
    // was observed, or when the observe deadline passes; each host then plans and applies as
    // soon as both its own state and the layouts are known.
    let states: std::sync::Mutex<BTreeMap<String, HostState>> = Default::default();
    let (layout_tx, layout_rx) = tokio::sync::watch::channel::<Option<Layouts>>(None);
    let (observed_tx, mut observed_rx) = tokio::sync::mpsc::channel::<()>(hosts.len().max(1));
    let scope = &scope;
    let states_ref = &states;
    let coordinator = async {
        let all = async {
            for _ in 0..hosts.len() {
                observed_rx.recv().await;
            }
        };
        match opts.observe_deadline {
            Some(deadline) => {
                let _ = tokio::time::timeout(deadline, all).await;
            }
            None => all.await,
        }
        let snapshot = states_ref.lock().expect("states lock").clone();
        let _ = layout_tx.send(Some(lay_out(inv, &snapshot)));
    };
    let host_tasks = join_all(hosts.iter().map(|h| {
        let mut layout_rx = layout_rx.clone();
        let observed_tx = observed_tx.clone();
        async move {
            let work = observe_host(inv, h, opts, progress).await;
            if let Some(state) = &work.state {
                states_ref
                    .lock()
                    .expect("states lock")
                    .insert(h.clone(), state.clone());
            }
            let _ = observed_tx.send(()).await;
            let layouts = layout_rx
                .wait_for(Option::is_some)
                .await
                .ok()
                .and_then(|l| l.clone())
                .unwrap_or_default();
            converge_host(inv, &layouts.layouts, scope, opts, work, progress).await
        }
    }));
    let ((), mut reports) = futures::join!(coordinator, host_tasks);
    let mut meshes = layout_rx.borrow().clone().unwrap_or_default().reports;
    reports.sort_by(|a, b| a.host.cmp(&b.host));

    for m in &mut meshes {
        let Some(mesh) = inv.meshes.get(&m.mesh) else {
            continue;
        };
        m.ready = m.error.is_none()
            && mesh.spec.hosts.iter().all(|member| {
                reports
                    .iter()
                    .find(|r| r.host == member.name)
                    .is_some_and(|r| {
                        r.error.is_none()
                            && r.converged
                            && !r
                                .issues
                                .iter()
                                .any(|i| i.mesh == m.mesh && i.attachment.is_none())
                            && r.meshes
                                .iter()
                                .any(|mh| mh.mesh == m.mesh && mh.tunnels_up == mh.tunnels_expected)
                    })
            });
    }
    Ok(PassReport {
        hosts: reports,
        meshes,
    })
}

/// How to reach `host`, with its private key from the inventory's Secrets (or the override).
pub fn target(inv: &Inventory, host: &str, opts: &PassOptions) -> Result<Target, HostError> {
    let h = inv
        .hosts
        .get(host)
        .ok_or_else(|| HostError::Config(format!("unknown DockerHost {host}")))?;
    let secret_ref = &h.spec.ssh_key_secret_ref;
    let identity = match &opts.identity_override {
        Some(bytes) => bytes.clone(),
        None => inv
            .secrets
            .get(&secret_ref.name)
            .and_then(|s| s.get(secret_ref.key_or_default()))
            .cloned()
            .ok_or_else(|| {
                HostError::Config(format!(
                    "spec.sshKeySecretRef: Secret {} has no key {} (give the Secret in the manifests or use --identity)",
                    secret_ref.name,
                    secret_ref.key_or_default()
                ))
            })?,
    };
    Ok(Target {
        host: host.to_owned(),
        address: h.spec.address.clone(),
        port: h.spec.port_or_default(),
        user: h.spec.user_or_default().to_owned(),
        host_key: h.spec.host_key.clone(),
        identity,
    })
}

async fn observe_host(
    inv: &Inventory,
    host: &str,
    opts: &PassOptions,
    progress: &(dyn Fn(&str, Progress) + Sync),
) -> HostWork {
    let mut work = HostWork {
        report: HostReport {
            host: host.to_owned(),
            ..HostReport::default()
        },
        started: Instant::now(),
        conn: None,
        state: None,
    };
    progress(host, Progress::Observing);
    let target = match target(inv, host, opts) {
        Ok(t) => t,
        Err(e) => {
            work.report.fail(&e);
            return work;
        }
    };
    let result: Result<(Connection, HostState), HostError> = async {
        let conn = Connection::open(&target, opts.timeouts)
            .await
            .map_err(HostError::Connect)?;
        let probe = probe_with_health(&desired::known_peer_gateways(inv, host), 1);
        let out = match conn.run_script(&probe, opts.timeouts.command).await {
            Ok(out) => out,
            Err(e) => {
                work.report.round_trips = conn.round_trips();
                conn.close().await;
                return Err(HostError::ProbeRun(e));
            }
        };
        let state = parse_probe(&out).map_err(HostError::ProbeOutput)?;
        Ok((conn, state))
    }
    .await;
    match result {
        Ok((conn, mut state)) => {
            let underlay = inv.hosts.get(host).map(|h| h.spec.underlay_address);
            state.capabilities.underlay_mtu = underlay.and_then(|a| state.underlay_mtu(a));
            work.report.capabilities = Some(state.capabilities.clone());
            match underlay.filter(|_| state.capabilities.underlay_mtu.is_none()) {
                // Tunnels from an address the host does not have would never carry a frame.
                Some(address) => {
                    let e = HostError::Config(format!(
                        "spec.underlayAddress: {address} is not an address of this host; \
                         nothing was changed on it"
                    ));
                    tracing::warn!(host, error = %e, "host not converged");
                    work.report.fail(&e);
                    work.report.round_trips = conn.round_trips();
                    conn.close().await;
                }
                None => {
                    work.state = Some(state);
                    work.conn = Some(conn);
                }
            }
        }
        Err(e) => {
            tracing::warn!(host, error = %e, "host not observed");
            work.report.fail(&e);
        }
    }
    work
}

fn desired_meshes(
    inv: &Inventory,
    layouts: &BTreeMap<String, MeshLayout>,
    host: &str,
    state: &HostState,
) -> Result<Vec<MeshOnHost>, HostError> {
    let mut out = Vec::new();
    for (name, layout) in layouts {
        let mesh = &inv.meshes[name];
        if let Some(m) = desired::mesh_on_host(inv, name, mesh, layout, host, state)
            .map_err(HostError::Desired)?
        {
            out.push(m);
        }
    }
    Ok(out)
}

async fn converge_host(
    inv: &Inventory,
    layouts: &BTreeMap<String, MeshLayout>,
    scope: &Scope,
    opts: &PassOptions,
    mut work: HostWork,
    progress: &(dyn Fn(&str, Progress) + Sync),
) -> HostReport {
    let host = work.report.host.clone();
    if let (Some(conn), Some(state)) = (work.conn.take(), work.state.take()) {
        if let Err(e) = converge_observed(
            inv,
            layouts,
            scope,
            opts,
            &mut work.report,
            &conn,
            state,
            progress,
        )
        .await
        {
            tracing::warn!(host = %host, error = %e, "host not converged");
            work.report.fail(&e);
        }
        work.report.round_trips = conn.round_trips();
        conn.close().await;
    }
    work.report.duration = work.started.elapsed();
    progress(&host, Progress::Done);
    work.report
}

#[allow(clippy::too_many_arguments)]
async fn converge_observed(
    inv: &Inventory,
    layouts: &BTreeMap<String, MeshLayout>,
    scope: &Scope,
    opts: &PassOptions,
    report: &mut HostReport,
    conn: &Connection,
    state: HostState,
    progress: &(dyn Fn(&str, Progress) + Sync),
) -> Result<(), HostError> {
    let host = report.host.clone();
    let desired = desired_meshes(inv, layouts, &host, &state)?;
    let plan = plan_host(&desired, &state, scope);
    report.planned = plan.steps.iter().map(script::describe).collect();
    progress(
        &host,
        Progress::Planned {
            steps: plan.steps.len(),
        },
    );
    let mut final_state = state;
    let mut final_plan = plan;
    if opts.apply && !final_plan.is_empty() {
        progress(
            &host,
            Progress::Applying {
                steps: final_plan.steps.len(),
            },
        );
        let out = conn
            .run_script(
                &apply_script(&final_plan, &health_targets(&desired)),
                opts.timeouts.command,
            )
            .await
            .map_err(HostError::ApplyRun)?;
        let outcome = parse_apply_output(&out);
        report.applied = outcome.applied;
        tracing::info!(host = %host, steps = final_plan.steps.len(), applied = outcome.applied, "applied plan");
        if let Some((n, detail)) = outcome.failed {
            let step = final_plan
                .steps
                .get(n)
                .map(script::describe)
                .unwrap_or_default();
            return Err(HostError::Step {
                number: n + 1,
                total: final_plan.steps.len(),
                step,
                detail: detail.trim().to_owned(),
            });
        }
        final_state = parse_probe(&outcome.after).map_err(HostError::AfterApply)?;
        final_plan = plan_host(&desired, &final_state, scope);
    } else {
        tracing::debug!(host = %host, steps = final_plan.steps.len(), "no change applied");
        check_unprobed_peers(inv, &host, opts, conn, &desired, &mut final_state).await?;
    }
    report.converged = final_plan.is_empty();
    summarize(report, &desired, &final_state, &final_plan);
    Ok(())
}

/// Health-checks, in a round trip of its own, the peer gateways the observe round trip could
/// not know in advance (a subnet that differs from what the spec, the status and the
/// name-derived slot suggested), so that a pass without changes judges every tunnel too.
async fn check_unprobed_peers(
    inv: &Inventory,
    host: &str,
    opts: &PassOptions,
    conn: &Connection,
    desired: &[MeshOnHost],
    state: &mut HostState,
) -> Result<(), HostError> {
    let asked: BTreeSet<std::net::Ipv4Addr> = desired::known_peer_gateways(inv, host)
        .into_iter()
        .collect();
    let missing: Vec<std::net::Ipv4Addr> = health_targets(desired)
        .into_iter()
        .filter(|gw| !asked.contains(gw))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    tracing::debug!(
        host,
        peers = missing.len(),
        "health-checking peers the probe could not know"
    );
    let out = conn
        .run_script(&probe_with_health(&missing, 1), opts.timeouts.command)
        .await
        .map_err(HostError::ProbeRun)?;
    let checked = parse_probe(&out).map_err(HostError::ProbeOutput)?;
    state.health.extend(checked.health);
    Ok(())
}

/// Fills per-mesh health and attachment results from the final state.
fn summarize(report: &mut HostReport, desired: &[MeshOnHost], state: &HostState, plan: &Plan) {
    report.issues = plan.issues.iter().map(IssueReport::from).collect();
    for m in desired {
        let up = peers_up(m, state);
        let unanswered: Vec<String> = devices_up(m, state)
            .into_iter()
            .filter(|p| !up.contains(p))
            .collect();
        report.meshes.push(MeshHostReport {
            mesh: m.mesh.clone(),
            subnet: m.bridge.subnet,
            gateway: m.bridge.address.addr(),
            tunnels_up: up.len() as u32,
            tunnels_expected: tunnels_expected(m),
            bridge: m.bridge.name.to_string(),
            peers_up: up,
            peers_unanswered: unanswered,
        });
        for a in &m.attachments {
            let Some(c) = state.container(&a.container).filter(|c| c.running) else {
                continue;
            };
            let attached = state.container_links.get(&c.id).is_some_and(|links| {
                links
                    .iter()
                    .any(|l| l.name == a.interface.as_str() && l.addrs.contains(&a.address))
            });
            if attached {
                report.attachments.push(AttachmentReport {
                    name: a.name.clone(),
                    mesh: m.mesh.clone(),
                    container_id: c.id.clone(),
                    address: a.address,
                });
            }
        }
    }
}

/// Every peer gateway of the host's meshes.
fn health_targets(desired: &[MeshOnHost]) -> Vec<std::net::Ipv4Addr> {
    let set: BTreeSet<std::net::Ipv4Addr> = desired
        .iter()
        .flat_map(|m| m.peer_gateways.values().copied())
        .collect();
    set.into_iter().collect()
}

/// Peers of a mesh on a host whose tunnel exists with the right parameters, sits on the bridge
/// and is up (for VXLAN: the device is right and has the peer's flood entry).
pub fn peers_up(m: &MeshOnHost, state: &HostState) -> Vec<String> {
    let answered = |peer: &str| {
        m.peer_gateways
            .get(peer)
            .and_then(|gw| state.health.get(gw))
            .copied()
            .unwrap_or(true)
    };
    devices_up(m, state)
        .into_iter()
        .filter(|p| answered(p))
        .collect()
}

/// Peers whose tunnel device is right and up, whatever the health check says.
pub fn devices_up(m: &MeshOnHost, state: &HostState) -> Vec<String> {
    let on_bridge = |name: &str| {
        state
            .link(name)
            .filter(|l| l.up && l.master.as_deref() == Some(m.bridge.name.as_str()))
    };
    if let Some(v) = &m.vxlan {
        let ok_dev = on_bridge(v.name.as_str()).is_some_and(|d| vxlan_matches(d, v));
        let floods = state
            .fdb
            .get(v.name.as_str())
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        return v
            .peers
            .iter()
            .filter(|(_, dst)| {
                ok_dev
                    && floods
                        .iter()
                        .any(|e| e.mac == "00:00:00:00:00:00" && e.dst == Some(**dst))
            })
            .map(|(peer, _)| peer.clone())
            .collect();
    }
    m.tunnels
        .iter()
        .filter(|t| on_bridge(t.name.as_str()).is_some_and(|l| gre_matches(l, t)))
        .map(|t| t.peer.clone())
        .collect()
}

/// Expected tunnels of a mesh on a host (one per peer).
fn tunnels_expected(m: &MeshOnHost) -> u32 {
    m.vxlan.as_ref().map_or(m.tunnels.len(), |v| v.peers.len()) as u32
}

/// What the apply script reported.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ApplyOutcome {
    /// Steps that succeeded.
    pub applied: usize,
    /// The failing step's index and output.
    pub failed: Option<(usize, String)>,
    /// Probe output after the change.
    pub after: String,
}

/// Parses the apply script's markers.
pub fn parse_apply_output(out: &str) -> ApplyOutcome {
    let mut outcome = ApplyOutcome::default();
    let (steps, after) = match out.split_once(PROBE_MARK) {
        Some((s, a)) => (s, a.to_owned()),
        None => (out, String::new()),
    };
    outcome.after = after;
    let mut failing: Option<(usize, String)> = None;
    for line in steps.lines() {
        if let Some((n, text)) = failing.as_mut() {
            if line == "gremesh-failed-end" {
                outcome.failed = Some((*n, std::mem::take(text)));
                failing = None;
            } else {
                text.push_str(line);
                text.push('\n');
            }
        } else if line.starts_with("gremesh-ok ") {
            outcome.applied += 1;
        } else if let Some(rest) = line.strip_prefix("gremesh-failed ") {
            let n = rest
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            failing = Some((n, String::new()));
        }
    }
    if let Some((n, text)) = failing {
        outcome.failed = Some((n, text));
    }
    if outcome.after.is_empty() && outcome.failed.is_none() {
        outcome.failed = Some((
            outcome.applied,
            "the apply script ended early (connection lost?)".to_owned(),
        ));
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_output_reports_the_failing_step_and_its_output() {
        let out =
            "gremesh-ok 0\ngremesh-ok 1\ngremesh-failed 2 2\nRTNETLINK answers: File exists\n\
                   \ngremesh-failed-end\n";
        let outcome = parse_apply_output(out);
        assert_eq!(outcome.applied, 2);
        let (n, detail) = outcome.failed.expect("a failed step");
        assert_eq!(n, 2);
        assert!(detail.contains("File exists"), "{detail}");
    }

    #[test]
    fn apply_output_cut_before_the_closing_probe_is_a_failure() {
        let outcome = parse_apply_output("gremesh-ok 0\n");
        assert_eq!(outcome.applied, 1);
        assert_eq!(outcome.failed.map(|(n, _)| n), Some(1));

        let done = parse_apply_output(&format!("gremesh-ok 0\n{PROBE_MARK}\n@@links\n[]\n"));
        assert_eq!(done.failed, None);
        assert!(done.after.contains("@@links"));
    }

    #[test]
    fn failure_reasons_come_from_the_error_kind() {
        let mismatch = HostError::Connect(SshError::HostKeyMismatch {
            presented: "SHA256:a".into(),
            pinned: "SHA256:b".into(),
        });
        assert_eq!(mismatch.reason(), FailureReason::HostKeyMismatch);
        assert!(mismatch.to_string().starts_with("host key mismatch"));
        let refused = HostError::Connect(SshError::Connect {
            address: "192.0.2.1".into(),
            port: 22,
            detail: "refused".into(),
        });
        assert_eq!(refused.reason(), FailureReason::Unreachable);
        let probe = HostError::ProbeRun(SshError::Timeout {
            what: "remote script",
            after: Duration::from_secs(1),
        });
        assert_eq!(probe.reason(), FailureReason::ProbeFailed);
        let step = HostError::Step {
            number: 3,
            total: 5,
            step: "create bridge".into(),
            detail: "File exists".into(),
        };
        assert_eq!(step.reason(), FailureReason::ApplyFailed);
        assert_eq!(
            step.to_string(),
            "step 3 of 5 failed: create bridge: File exists"
        );
        let mut report = HostReport::default();
        report.fail(&step);
        assert_eq!(report.failure, Some(FailureReason::ApplyFailed));
        assert_eq!(report.error.as_deref(), Some(step.to_string().as_str()));
    }
}
