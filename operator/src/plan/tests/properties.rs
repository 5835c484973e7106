//! Properties over generated specs and crowded hosts: one plan converges from any earlier
//! state, what is not the pass's is never touched, and removing the pass's meshes gives the
//! host back exactly as it was.

use std::collections::BTreeMap;

use ipnet::Ipv4Net;
use proptest::prelude::*;

use super::sim::{all_routes, Ns};
use super::*;
use crate::addressing::{IfName, Role};
use crate::observe::DockerNetworkState;
use crate::plan::{plan_host, Action, Namespace, Step};
use crate::script;

fn spec_strategy() -> impl Strategy<Value = Spec> {
    (
        any::<bool>(),
        any::<bool>(),
        proptest::sample::subsequence(vec!["host-b", "host-c", "host-d"], 0..=3),
        proptest::option::of(1200u32..1500),
        1u32..5,
        proptest::collection::btree_map(0usize..4, (2u8..250, 0u8..5), 0..4),
        any::<bool>(),
    )
        .prop_map(|(vxlan, stp, peers, mtu, key, atts, docker_net)| Spec {
            vxlan,
            stp,
            peers,
            mtu,
            key,
            attachments: atts.into_iter().map(|(c, (o, r))| (c, o, r)).collect(),
            docker_net,
        })
}

/// Four containers c0..c3: running or not, and how each is networked.
fn guests() -> impl Strategy<Value = Vec<Guest>> {
    proptest::collection::vec((any::<bool>(), 0u8..4), 4).prop_map(|v| {
        v.into_iter()
            .enumerate()
            .map(|(i, (run, net))| {
                let net = match net {
                    0 | 1 => Net::Isolated,
                    2 => Net::Docker,
                    _ => Net::Host,
                };
                (format!("c{i}"), run, net)
            })
            .collect()
    })
}

/// Puts something of the host's own inside mesh network `index`: an address on a device of
/// its own, or a route through the underlay.
fn add_overlap(sim: &mut Sim, index: usize, address: bool) {
    if address {
        let addr = format!("10.{}.200.1/24", 10 + index).parse().unwrap();
        sim.state.links.push(Link {
            name: "wlan0".into(),
            mtu: 1500,
            up: true,
            addrs: vec![addr],
            ..Link::default()
        });
    } else {
        sim.state.routes.push(RouteEntry {
            dst: format!("10.{}.77.0/24", 10 + index),
            gateway: Some("10.200.0.1".parse().unwrap()),
            dev: Some("eth0".into()),
            protocol: Some("static".into()),
        });
    }
    sim.sync_routes();
}

fn sorted_links(links: &[Link], keep: impl Fn(&Link) -> bool) -> Vec<Link> {
    let mut v: Vec<Link> = links.iter().filter(|l| keep(l)).cloned().collect();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

fn sorted_routes(routes: &[RouteEntry], keep: impl Fn(&RouteEntry) -> bool) -> Vec<String> {
    let mut v: Vec<String> = routes
        .iter()
        .filter(|r| keep(r))
        .map(|r| format!("{r:?}"))
        .collect();
    v.sort();
    v
}

/// One namespace's links and routes.
type Space = (Vec<Link>, Vec<String>);

/// What a pass over `scope` must leave exactly as it was: in every namespace the links that
/// are not in scope and the routes through them, and other meshes' Docker networks.
#[derive(Debug, PartialEq)]
struct Untouchable {
    spaces: BTreeMap<Ns, Space>,
    networks: Vec<String>,
}

fn untouchable(state: &HostState, scope: &Scope) -> Untouchable {
    let space = |links: &[Link], routes: &[RouteEntry]| {
        let foreign = |l: &Link| !in_scope(scope, l);
        let through_foreign = |r: &RouteEntry| {
            r.dev
                .as_deref()
                .is_none_or(|d| links.iter().find(|l| l.name == d).is_none_or(foreign))
        };
        (
            sorted_links(links, foreign),
            sorted_routes(routes, through_foreign),
        )
    };
    let mut spaces = BTreeMap::new();
    spaces.insert(None, space(&state.links, &state.routes));
    for (id, links) in &state.container_links {
        let routes = state
            .container_routes
            .get(id)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        spaces.insert(Some(id.clone()), space(links, routes));
    }
    let mut networks: Vec<String> = state
        .docker_networks
        .iter()
        .filter(|n| !scope.meshes.contains(&n.mesh))
        .map(|n| format!("{n:?}"))
        .collect();
    networks.sort();
    Untouchable { spaces, networks }
}

/// Everything the probe sees, normalised for comparison.
#[derive(Debug, PartialEq)]
struct Full {
    links: BTreeMap<Ns, Vec<Link>>,
    routes: BTreeMap<Ns, Vec<String>>,
    networks: Vec<String>,
    fdb: Vec<String>,
}

fn full(state: &HostState) -> Full {
    let mut links = BTreeMap::new();
    links.insert(None, sorted_links(&state.links, |_| true));
    for (id, l) in &state.container_links {
        links.insert(Some(id.clone()), sorted_links(l, |_| true));
    }
    let mut routes = all_routes(state);
    routes.retain(|_, v| !v.is_empty());
    let mut networks: Vec<String> = state
        .docker_networks
        .iter()
        .map(|n: &DockerNetworkState| format!("{n:?}"))
        .chain(state.docker_network_names.iter().cloned())
        .collect();
    networks.sort();
    let fdb = state
        .fdb
        .iter()
        .filter(|(_, e)| !e.is_empty())
        .map(|e| format!("{e:?}"))
        .collect();
    Full {
        links,
        routes,
        networks,
        fdb,
    }
}

/// Drifts the host by hand: gremesh's devices deleted, re-MTU'd, stripped of addresses or
/// taken down; a route added through its container interface; an address of the
/// administrator's put on its bridge (recorded in `hand`).
fn drift_one(
    sim: &mut Sim,
    scope: &Scope,
    pick: usize,
    kind: u8,
    hand: &mut Vec<(String, Ipv4Net)>,
) {
    if kind == 4 {
        let inner: Vec<(String, String)> = sim
            .state
            .container_links
            .iter()
            .flat_map(|(id, links)| {
                links
                    .iter()
                    .filter(|l| in_scope(scope, l) && l.up && !l.addrs.is_empty())
                    .map(move |l| (id.clone(), l.name.clone()))
            })
            .collect();
        if let Some((id, dev)) = inner.get(pick % inner.len().max(1)) {
            sim.state
                .container_routes
                .entry(id.clone())
                .or_default()
                .push(RouteEntry {
                    dst: "192.168.250.0/24".into(),
                    gateway: None,
                    dev: Some(dev.clone()),
                    protocol: Some("boot".into()),
                });
        }
        return;
    }
    let owned: Vec<Link> = sim
        .state
        .links
        .iter()
        .filter(|l| in_scope(scope, l))
        .cloned()
        .collect();
    let Some(link) = owned.get(pick % owned.len().max(1)) else {
        return;
    };
    let name = link.name.clone();
    match kind {
        0 => {
            sim.delete(&None, &name).unwrap();
            hand.retain(|(dev, _)| *dev != name);
        }
        1 => sim.link_mut(&None, &name).unwrap().mtu = 1300,
        2 => {
            sim.link_mut(&None, &name).unwrap().addrs.clear();
            hand.retain(|(dev, _)| *dev != name);
        }
        3 => sim.link_mut(&None, &name).unwrap().up = false,
        _ if link.kind.as_deref() == Some("bridge") => {
            let address: Ipv4Net = "192.168.77.1/24".parse().unwrap();
            let l = sim.link_mut(&None, &name).unwrap();
            if !l.addrs.contains(&address) {
                l.addrs.push(address);
                hand.push((name, address));
            }
        }
        _ => {}
    }
    sim.sync_routes();
}

/// What must hold on a converged host, whatever the specs.
fn check_converged(
    state: &HostState,
    scope: &Scope,
    desired: &[MeshOnHost],
    issues: &[crate::plan::Issue],
) -> Result<(), TestCaseError> {
    let mesh_addr = |a: &Ipv4Net| "10.0.0.0/8".parse::<Ipv4Net>().unwrap().contains(&a.addr());
    let overlaps = |a: &Ipv4Net, b: &Ipv4Net| a.trunc().contains(b) || b.trunc().contains(a);
    let mut spaces: Vec<&[Link]> = vec![&state.links];
    spaces.extend(state.container_links.values().map(Vec::as_slice));
    for links in spaces {
        for ours in links.iter().filter(|l| in_scope(scope, l)) {
            for a in ours.addrs.iter().filter(|a| mesh_addr(a)) {
                for other in links.iter().filter(|l| l.name != ours.name) {
                    prop_assert!(
                        !other.addrs.iter().any(|b| overlaps(a, b)),
                        "{a} on {} overlaps an address of {}",
                        ours.name,
                        other.name
                    );
                }
            }
        }
    }
    for l in state.links.iter().filter(|l| in_scope(scope, l)) {
        let attach = l
            .marker()
            .is_some_and(|m| matches!(m.role, Role::Attach(_)));
        prop_assert!(
            !attach,
            "container interface {} is in the host's namespace",
            l.name
        );
    }
    // Attachments that converged carry exactly their routes.
    for m in desired {
        let reported = |a: &str| {
            issues
                .iter()
                .any(|i| i.mesh == m.mesh && i.attachment.as_deref().is_none_or(|x| x == a))
        };
        for a in m.attachments.iter().filter(|a| !reported(&a.name)) {
            let Some(c) = state.container(&a.container) else {
                continue;
            };
            let (Some(links), Some(routes)) = (
                state.container_links.get(&c.id),
                state.container_routes.get(&c.id),
            ) else {
                continue;
            };
            let Some(own) = links
                .iter()
                .find(|l| l.marker() == Some(m.marker(Role::Attach(a.name.clone()))))
            else {
                continue;
            };
            for r in routes
                .iter()
                .filter(|r| r.dev.as_deref() == Some(own.name.as_str()))
            {
                let listed = a
                    .routes
                    .iter()
                    .any(|(to, via)| r.destination() == Some(*to) && r.gateway == *via);
                prop_assert!(
                    listed || r.is_connected_of(own),
                    "route {r:?} through {} is not the attachment's",
                    own.name
                );
            }
        }
    }
    Ok(())
}

/// An earlier state and a new spec for [`one_pass`].
#[derive(Debug)]
struct Case {
    old: Vec<Spec>,
    new: Vec<Spec>,
    outside: Option<(Spec, usize)>,
    overlap: Option<(usize, bool)>,
    cut: usize,
    drift: Vec<(usize, u8)>,
    guests: Vec<Guest>,
}

fn case_strategy() -> impl Strategy<Value = Case> {
    (
        proptest::collection::vec(spec_strategy(), 1..3),
        proptest::collection::vec(spec_strategy(), 1..3),
        proptest::option::of((spec_strategy(), 0usize..3)),
        proptest::option::of((0usize..3, any::<bool>())),
        0usize..200,
        proptest::collection::vec((0usize..50, 0u8..6), 0..4),
        guests(),
    )
        .prop_map(|(old, new, outside, overlap, cut, drift, guests)| Case {
            old,
            new,
            outside,
            overlap,
            cut,
            drift,
            guests,
        })
}

fn one_pass(case: Case) -> Result<(), TestCaseError> {
    prop_assume!(valid(&case.old) && valid(&case.new));
    if let Some((spec, index)) = &case.outside {
        prop_assume!(valid_named(&[(OUTSIDE.to_owned(), spec, *index)]));
    }
    let mut sim = sim_of(base_state(&case.guests));
    if let Some((index, address)) = case.overlap {
        add_overlap(&mut sim, index, address);
    }
    if let Some((spec, index)) = &case.outside {
        let named = [(OUTSIDE.to_owned(), spec, *index)];
        let desired = desired_named(&named, &sim.state);
        let plan = plan_host(&desired, &sim.state, &scope_named(&[OUTSIDE]));
        apply_all(&mut sim, &plan);
    }
    let scope = scope(case.old.len().max(case.new.len()));
    let before = full(&sim.state);
    let kept = untouchable(&sim.state, &scope);

    // An earlier spec, applied up to an arbitrary step (an interrupted pass), then drift.
    let old_plan = plan_host(&desired_for(&case.old, &sim.state), &sim.state, &scope);
    for step in old_plan.steps.iter().take(case.cut) {
        sim.apply(step)
            .unwrap_or_else(|e| panic!("{}: {e}", script::describe(step)));
    }
    let mut hand = Vec::new();
    for (pick, kind) in case.drift {
        drift_one(&mut sim, &scope, pick, kind, &mut hand);
    }

    let desired = desired_for(&case.new, &sim.state);
    let plan = plan_host(&desired, &sim.state, &scope);
    apply_all(&mut sim, &plan);
    let again = plan_host(&desired, &sim.state, &scope);
    let left: Vec<String> = again.steps.iter().map(script::describe).collect();
    prop_assert!(left.is_empty(), "second plan not empty: {left:#?}");
    prop_assert_eq!(untouchable(&sim.state, &scope), kept);
    check_converged(&sim.state, &scope, &desired, &again.issues)?;
    for (dev, address) in &hand {
        if let Some(l) = sim.state.link(dev) {
            prop_assert!(
                l.addrs.contains(address),
                "{address} of the administrator's removed from {dev}"
            );
        }
    }

    let removal = plan_host(&[], &sim.state, &scope);
    apply_all(&mut sim, &removal);
    prop_assert_eq!(full(&sim.state), before);
    Ok(())
}

/// Whether a command word is safe: a literal flag or fixed script, or a value made of
/// characters no shell treats specially.
fn safe_word(w: &str) -> bool {
    let literal = [
        "-t",
        "-n",
        "-c",
        "--",
        "--driver",
        script::RENAME_SCRIPT,
        script::DELETE_VETH_SCRIPT,
        script::DELETE_ROUTE_SCRIPT,
    ];
    if literal.contains(&w) {
        return true;
    }
    // `--flag=value` words: a literal flag, then a value that must be safe.
    let value = match w.strip_prefix("--") {
        Some(rest) => rest.split_once('=').map(|(_, v)| v).unwrap_or(""),
        None => w,
    };
    !value.is_empty()
        && !value.starts_with('-')
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:/=-".contains(&b))
}

fn safe_words(new: Vec<Spec>, guests: Vec<Guest>) -> Result<(), TestCaseError> {
    prop_assume!(valid(&new));
    let state = base_state(&guests);
    let mut plan = plan_host(&desired_for(&new, &state), &state, &scope(new.len()));
    // Deletions too: every device of the plan, as pruned once built.
    let mut sim = sim_of(state);
    apply_all(&mut sim, &plan);
    plan.steps
        .extend(plan_host(&[], &sim.state, &scope(new.len())).steps);
    plan.steps.push(Step {
        ns: Namespace::Host,
        action: Action::DeleteRoute {
            dev: IfName::new("eth1").unwrap(),
            to: "0.0.0.0/0".parse().unwrap(),
            via: Some("10.10.0.1".parse().unwrap()),
        },
        object: "route".into(),
    });
    for step in &plan.steps {
        let words = script::argv(step);
        for w in &words {
            prop_assert!(safe_word(w), "unsafe word {:?} in {:?}", w, words);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// From any earlier gremesh state (a different spec, partly applied, then drifted), on a
    /// host crowded with look-alikes, foreign routes and another mesh outside the pass's
    /// scope, one plan converges the host: a second plan is empty, what is not the pass's is
    /// untouched, and taking the pass's meshes away restores the host exactly.
    #[test]
    fn one_pass_converges_from_any_earlier_state(case in case_strategy()) {
        one_pass(case)?;
    }

    /// Every word of every generated command is made of characters that no shell treats
    /// specially, whatever the spec.
    #[test]
    fn commands_carry_only_safe_words(
        new in proptest::collection::vec(spec_strategy(), 1..3),
        guests in guests(),
    ) {
        safe_words(new, guests)?;
    }
}
