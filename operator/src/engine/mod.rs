//! The engine: one pass over every host of an inventory — observe, plan, apply — with hosts
//! handled concurrently, each over its own SSH connection.
//!
//! Both front doors (`gremesh apply`/`plan`/`delete` and the operator) call [`run_pass`];
//! neither has logic the other lacks. What a pass found is in [`report`], why a host failed in
//! [`error`], how tunnels are judged in [`health`], and how the apply script's output is read
//! in [`apply_output`].
//!
//! Caveat: with an automatic MTU, the mesh MTU depends on every member's underlay MTU, so
//! planning waits until every host was probed or its connection timed out (bounded by the
//! connect timeout). Pin `spec.mtu` to take this wait out of the picture.

mod apply_output;
mod error;
mod health;
mod report;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use futures::future::join_all;

use crate::desired::{self, MeshLayout, MeshOnHost};
use crate::manifest::Inventory;
use crate::observe::{parse_probe, probe_with_health, HostState};
use crate::plan::{plan_host, Issue, IssueReason, Scope};
use crate::script::{self, apply_script};
use crate::ssh::{Connection, Target, Timeouts};
use crate::validate::{validate, Rejected};

pub use apply_output::{parse_apply_output, ApplyOutcome};
pub use error::{FailureReason, HostError};
pub use health::{devices_up, peers_up};
pub use report::{
    AttachmentReport, HostReport, IssueReport, MeshHostReport, MeshReport, PassReport,
};

use health::{health_targets, mesh_reports, summarize, unanswered_changed_peers};

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

/// Mesh layouts of a pass and their report rows.
#[derive(Clone, Default)]
struct Layouts {
    layouts: BTreeMap<String, MeshLayout>,
    reports: Vec<MeshReport>,
}

/// Lays out every mesh of the inventory from the states observed so far. A mesh with a
/// member whose underlay address turned out not to be on it gets no layout: its tunnels would
/// point at an address that carries nothing, so the mesh is left as it is everywhere.
fn lay_out(
    inv: &Inventory,
    states: &BTreeMap<String, HostState>,
    misplaced: &BTreeSet<String>,
) -> Layouts {
    let mut out = Layouts::default();
    for (name, mesh) in &inv.meshes {
        let misplaced_member = mesh.spec.hosts.iter().find(|m| misplaced.contains(&m.name));
        let laid_out = match misplaced_member {
            Some(m) => Err(format!(
                "host {}: its spec.underlayAddress is not an address of that host; the mesh is \
                 left as it is on every host until that is fixed",
                m.name
            )),
            None => desired::layout(inv, name, mesh, states).map_err(|e| e.to_string()),
        };
        let (mtu, error) = match laid_out {
            Ok(layout) => {
                let mtu = layout.mtu;
                out.layouts.insert(name.clone(), layout);
                (mtu, None)
            }
            Err(e) => (0, Some(e)),
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
    /// The host answered, but its spec.underlayAddress is not one of its addresses.
    underlay_missing: bool,
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
    let misplaced: std::sync::Mutex<BTreeSet<String>> = Default::default();
    let misplaced_ref = &misplaced;
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
        let misplaced = misplaced_ref.lock().expect("misplaced lock").clone();
        let _ = layout_tx.send(Some(lay_out(inv, &snapshot, &misplaced)));
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
            if work.underlay_missing {
                misplaced_ref
                    .lock()
                    .expect("misplaced lock")
                    .insert(h.clone());
            }
            let _ = observed_tx.send(()).await;
            let layouts = layout_rx
                .wait_for(Option::is_some)
                .await
                .ok()
                .and_then(|l| l.clone())
                .unwrap_or_default();
            converge_host(inv, &layouts, scope, opts, work, progress).await
        }
    }));
    let ((), finished) = futures::join!(coordinator, host_tasks);
    let mut reports = recheck_health(finished, opts).await;
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
        underlay_missing: false,
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
                    work.underlay_missing = true;
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

/// What the host should look like for each of its meshes, and the meshes held as they are on
/// it this pass (not built, not pruned), each with the issue that says why.
fn desired_meshes(
    inv: &Inventory,
    layouts: &BTreeMap<String, MeshLayout>,
    reports: &[MeshReport],
    host: &str,
    state: &HostState,
) -> (Vec<MeshOnHost>, Vec<Issue>) {
    let mut out = Vec::new();
    let mut held = Vec::new();
    for (name, mesh) in &inv.meshes {
        if !mesh.spec.hosts.iter().any(|m| m.name == host) {
            continue;
        }
        let hold = |reason, message: String| Issue {
            mesh: name.clone(),
            attachment: None,
            reason,
            message,
        };
        let Some(layout) = layouts.get(name) else {
            let why = reports
                .iter()
                .find(|r| &r.mesh == name)
                .and_then(|r| r.error.clone())
                .unwrap_or_else(|| "the mesh could not be laid out".to_owned());
            held.push(hold(IssueReason::LayoutFailed, why));
            continue;
        };
        match desired::mesh_on_host(inv, name, mesh, layout, host, state) {
            Ok(Some(m)) => out.push(m),
            Ok(None) => {}
            Err(e) => held.push(hold(IssueReason::Unsupported, e.to_string())),
        }
    }
    (out, held)
}

/// A host whose own part of the pass is over; its connection stays open until the whole
/// pass is, for a last health check (see [`recheck_health`]).
struct Finished {
    report: HostReport,
    conn: Option<Connection>,
    /// What the host should look like and what it looked like at the end, when it converged
    /// without error.
    outcome: Option<(Vec<MeshOnHost>, HostState)>,
}

async fn converge_host(
    inv: &Inventory,
    layouts: &Layouts,
    scope: &Scope,
    opts: &PassOptions,
    mut work: HostWork,
    progress: &(dyn Fn(&str, Progress) + Sync),
) -> Finished {
    let host = work.report.host.clone();
    let mut outcome = None;
    let conn = work.conn.take();
    if let (Some(conn), Some(state)) = (&conn, work.state.take()) {
        match converge_observed(
            inv,
            layouts,
            scope,
            opts,
            &mut work.report,
            conn,
            state,
            progress,
        )
        .await
        {
            Ok(done) => outcome = Some(done),
            Err(e) => {
                tracing::warn!(host = %host, error = %e, "host not converged");
                work.report.fail(&e);
            }
        }
    }
    work.report.duration = work.started.elapsed();
    progress(&host, Progress::Done);
    Finished {
        report: work.report,
        conn,
        outcome,
    }
}

/// Once every host is done: a host whose health check found a peer silent that was itself
/// being changed in this pass asks that peer again (one more round trip, up to three tries),
/// so that a peer built after this host's probe is not reported as down. Then every
/// connection is closed.
async fn recheck_health(finished: Vec<Finished>, opts: &PassOptions) -> Vec<HostReport> {
    let changed: BTreeSet<String> = finished
        .iter()
        .filter(|f| f.report.applied > 0)
        .map(|f| f.report.host.clone())
        .collect();
    join_all(finished.into_iter().map(|mut f| {
        let changed = &changed;
        async move {
            if let (Some(conn), Some((desired, state))) = (&f.conn, f.outcome.as_mut()) {
                let ask = unanswered_changed_peers(&f.report, desired, changed);
                if !ask.is_empty() {
                    let host = &f.report.host;
                    tracing::debug!(host = %host, peers = ask.len(), "asking changed peers again");
                    match conn
                        .run_script(&probe_with_health(&ask, 3), opts.timeouts.command)
                        .await
                    {
                        Ok(out) => match parse_probe(&out) {
                            Ok(again) => {
                                state.health.extend(again.health);
                                f.report.meshes = mesh_reports(desired, state);
                            }
                            Err(e) => tracing::debug!(host = %host, error = %e, "health recheck"),
                        },
                        Err(e) => tracing::debug!(host = %host, error = %e, "health recheck"),
                    }
                }
            }
            if let Some(conn) = f.conn {
                f.report.round_trips = conn.round_trips();
                conn.close().await;
            }
            f.report
        }
    }))
    .await
}

#[allow(clippy::too_many_arguments)]
async fn converge_observed(
    inv: &Inventory,
    layouts: &Layouts,
    scope: &Scope,
    opts: &PassOptions,
    report: &mut HostReport,
    conn: &Connection,
    state: HostState,
    progress: &(dyn Fn(&str, Progress) + Sync),
) -> Result<(Vec<MeshOnHost>, HostState), HostError> {
    let host = report.host.clone();
    let (desired, held) = desired_meshes(inv, &layouts.layouts, &layouts.reports, &host, &state);
    // A held mesh is out of this host's scope: neither built nor pruned, and in the way of
    // others like any mesh this pass does not handle.
    let mut scope = scope.clone();
    for issue in &held {
        scope.meshes.remove(&issue.mesh);
    }
    let scope = &scope;
    let plan_with_held = |state: &HostState| {
        let mut plan = plan_host(&desired, state, scope);
        plan.issues.extend(held.iter().cloned());
        plan
    };
    let plan = plan_with_held(&state);
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
        final_plan = plan_with_held(&final_state);
    } else {
        tracing::debug!(host = %host, steps = final_plan.steps.len(), "no change applied");
        check_unprobed_peers(inv, &host, opts, conn, &desired, &mut final_state).await?;
    }
    report.converged = final_plan.is_empty();
    summarize(report, &desired, &final_state, &final_plan);
    Ok((desired, final_state))
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
