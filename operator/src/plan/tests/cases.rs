//! Worked examples: one situation each, with the plan or the issue a user would expect.

use ipnet::Ipv4Net;

use super::*;
use crate::addressing::{IfName, Marker, Role};
use crate::plan::{plan_host, Action, Issue, IssueReason, Namespace, Plan};
use crate::script;

fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

/// Applies `desired` to `sim` in one plan, checks a second plan is empty, returns the first.
fn converge(sim: &mut Sim, desired: &[MeshOnHost], scope: &Scope) -> Plan {
    let plan = plan_host(desired, &sim.state, scope);
    apply_all(sim, &plan);
    let again = plan_host(desired, &sim.state, scope);
    assert!(again.steps.is_empty(), "{:#?}", again.steps);
    plan
}

fn container_routes<'a>(sim: &'a Sim, name: &str) -> &'a [RouteEntry] {
    let id = &sim.state.container(name).unwrap().id;
    sim.state
        .container_routes
        .get(id)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn only_issue(plan: &Plan) -> &Issue {
    assert_eq!(plan.issues.len(), 1, "{:#?}", plan.issues);
    &plan.issues[0]
}

// --- routes inside containers -----------------------------------------------------------------

#[test]
fn connected_routes_deleted_by_hand_are_put_back() {
    let state = base_state(&isolated(&[true]));
    let mut sim = sim_of(state);
    let desired = desired_for(&[Spec::vxlan(42, vec![(0, 10, 1)])], &sim.state);
    converge(&mut sim, &desired, &scope(1));
    // Drift: both connected routes of the mesh network gone (bridge and container eth1).
    let mut drifted = sim.state.clone();
    let mesh_net = |r: &RouteEntry| r.dst == "10.10.0.0/16" && r.gateway.is_none();
    drifted.routes.retain(|r| !mesh_net(r));
    for routes in drifted.container_routes.values_mut() {
        routes.retain(|r| !mesh_net(r));
    }
    let plan = plan_host(&desired, &drifted, &scope(1));
    let put_back: Vec<String> = plan
        .steps
        .iter()
        .filter(|s| matches!(s.action, Action::AddConnectedRoute { .. }))
        .map(script::describe)
        .collect();
    assert_eq!(put_back.len(), 2, "{:#?}", plan.steps);
    assert!(
        put_back
            .iter()
            .all(|d| d.contains("ip route replace 10.10.0.0/16 dev ")
                && d.contains("proto kernel scope link src 10.10.")),
        "{put_back:#?}"
    );
    assert_eq!(
        plan.steps.len(),
        2 + 1,
        "only the routes (and the container check): {:#?}",
        plan.steps
    );
    let mut sim = sim_of(drifted);
    apply_all(&mut sim, &plan);
    assert!(plan_host(&desired, &sim.state, &scope(1)).steps.is_empty());
}

#[test]
fn attachment_route_does_not_replace_dockers_default_route() {
    let state = base_state(&[("c0".into(), true, Net::Docker)]);
    let routes_before = state.container_routes.values().next().unwrap().clone();
    // Route kind 3: its own network and a default route through the mesh gateway.
    let desired = desired_for(&[Spec::vxlan(42, vec![(0, 10, 3)])], &state);
    let mut sim = sim_of(state);
    let plan = converge(&mut sim, &desired, &scope(1));
    assert!(!plan.steps.iter().any(|s| matches!(&s.action,
        Action::ReplaceRoute { to, .. } if to.prefix_len() == 0)));
    let issue = only_issue(&plan);
    assert_eq!(issue.reason, IssueReason::RouteConflict);
    assert_eq!(issue.attachment.as_deref(), Some("m0-c0"));
    for word in [
        "container c0",
        "0.0.0.0/0",
        "via 172.18.0.1",
        "device eth0",
        "gremesh did not create",
    ] {
        assert!(issue.message.contains(word), "{word}: {}", issue.message);
    }
    // Docker's default route is still there; the rest of the attachment converged.
    let routes = container_routes(&sim, "c0");
    assert!(routes.contains(&routes_before[0]), "{routes:#?}");
    assert!(routes
        .iter()
        .any(|r| r.dst == "192.168.0.0/24" && r.dev.as_deref() == Some("eth1")));
}

#[test]
fn routes_dropped_from_the_spec_are_deleted_but_the_connected_route_stays() {
    let state = base_state(&isolated(&[true]));
    let mut sim = sim_of(state);
    let both = desired_for(&[Spec::vxlan(42, vec![(0, 10, 3)])], &sim.state);
    converge(&mut sim, &both, &scope(1));
    let own_only = desired_for(&[Spec::vxlan(42, vec![(0, 10, 1)])], &sim.state);
    let plan = converge(&mut sim, &own_only, &scope(1));
    let deletes: Vec<_> = plan
        .steps
        .iter()
        .filter(|s| matches!(s.action, Action::DeleteRoute { .. }))
        .map(script::describe)
        .collect();
    assert_eq!(deletes.len(), 1, "{deletes:?}");
    assert!(
        deletes[0]
            .ends_with("ip route del 0.0.0.0/0 via 10.10.0.1 dev eth1 (done if already gone)"),
        "{deletes:?}"
    );
    let routes = container_routes(&sim, "c0");
    let dsts: Vec<&str> = routes.iter().map(|r| r.dst.as_str()).collect();
    assert_eq!(dsts.len(), 2, "{routes:#?}");
    assert!(dsts.contains(&"10.10.0.0/16") && dsts.contains(&"192.168.0.0/24"));

    // A route added by hand through gremesh's interface goes too.
    let id = sim.state.container("c0").unwrap().id.clone();
    sim.state
        .container_routes
        .get_mut(&id)
        .unwrap()
        .push(RouteEntry {
            dst: "10.99.0.0/16".into(),
            gateway: Some("10.10.0.1".parse().unwrap()),
            dev: Some("eth1".into()),
            protocol: Some("boot".into()),
        });
    let plan = converge(&mut sim, &own_only, &scope(1));
    assert_eq!(plan.steps.len(), 2, "{:#?}", plan.steps);
    assert_eq!(plan.steps[0].action, Action::CheckContainer);
}

#[test]
fn detach_gives_the_container_its_routes_back() {
    let state = base_state(&[("c0".into(), true, Net::Docker)]);
    let before = container_routes(&sim_of(state.clone()), "c0").to_vec();
    let mut sim = sim_of(state);
    for kind in [1, 2, 3] {
        let desired = desired_for(&[Spec::vxlan(42, vec![(0, 10, kind)])], &sim.state);
        converge(&mut sim, &desired, &scope(1));
        converge(&mut sim, &[], &scope(1));
        assert_eq!(
            container_routes(&sim, "c0"),
            before.as_slice(),
            "route kind {kind}"
        );
    }
}

// --- addresses on gremesh's own devices -------------------------------------------------------

#[test]
fn addresses_outside_the_mesh_network_are_left_on_gremesh_devices() {
    let mut sim = sim_of(base_state(&isolated(&[true])));
    let desired = desired_for(&[Spec::vxlan(42, vec![(0, 10, 0)])], &sim.state);
    converge(&mut sim, &desired, &scope(1));
    let bridge = desired[0].bridge.name.to_string();
    let id = sim.state.container("c0").unwrap().id.clone();
    let hand = net("192.168.77.1/24");
    let old = net("10.10.5.1/16");
    sim.link_mut(&None, &bridge)
        .unwrap()
        .addrs
        .extend([hand, old]);
    let inner = sim.link_mut(&Some(id.clone()), "eth1").unwrap();
    inner
        .addrs
        .extend([net("192.168.78.5/24"), net("10.10.0.99/24")]);
    sim.sync_routes();
    let plan = converge(&mut sim, &desired, &scope(1));
    let removed: Vec<(String, Ipv4Net)> = plan
        .steps
        .iter()
        .filter_map(|s| match &s.action {
            Action::DelAddress { dev, address } => Some((dev.to_string(), *address)),
            _ => None,
        })
        .collect();
    assert_eq!(
        removed,
        [(bridge.clone(), old), ("eth1".into(), net("10.10.0.99/24"))]
    );
    assert!(sim.state.link(&bridge).unwrap().addrs.contains(&hand));
    let inner = sim.link_mut(&Some(id), "eth1").unwrap();
    assert_eq!(inner.addrs, [net("10.10.0.10/16"), net("192.168.78.5/24")]);
}

// --- devices of other meshes ------------------------------------------------------------------

/// Mesh `blue` (VNI 77, network index 0) applied on its own, as from other files.
fn with_blue(attachments: Vec<(usize, u8, u8)>, guests: &[Guest]) -> (Sim, Spec) {
    let blue = Spec::vxlan(77, attachments);
    let mut sim = sim_of(base_state(guests));
    let named = [("blue".to_owned(), &blue, 0)];
    let desired = desired_named(&named, &sim.state);
    converge(&mut sim, &desired, &scope_named(&["blue"]));
    (sim, blue)
}

#[test]
fn renamed_copy_of_a_mesh_builds_nothing_and_names_the_other_mesh() {
    let (sim, blue) = with_blue(vec![], &[]);
    let named = [("blue2".to_owned(), &blue, 0)];
    let plan = plan_host(
        &desired_named(&named, &sim.state),
        &sim.state,
        &scope_named(&["blue2"]),
    );
    assert!(plan.steps.is_empty(), "{:#?}", plan.steps);
    let issue = only_issue(&plan);
    assert_eq!(issue.reason, IssueReason::ForeignDevice);
    let bridge = crate::addressing::bridge_name("blue");
    assert_eq!(
        issue.message,
        format!(
            "gateway address 10.10.0.1 is already on mesh blue's bridge {bridge}; remove mesh \
             blue from this host first"
        )
    );
}

#[test]
fn network_overlapping_another_mesh_builds_nothing_and_names_it() {
    let (sim, _) = with_blue(vec![], &[]);
    // Another VNI, the same network, another gateway.
    let named = [("blue2".to_owned(), &Spec::vxlan(78, vec![]), 0)];
    let mut desired = desired_named(&named, &sim.state);
    desired[0].bridge.address = net("10.10.5.1/16");
    let plan = plan_host(&desired, &sim.state, &scope_named(&["blue2"]));
    assert!(plan.steps.is_empty(), "{:#?}", plan.steps);
    let issue = only_issue(&plan);
    assert_eq!(issue.reason, IssueReason::NetworkOverlap);
    let bridge = crate::addressing::bridge_name("blue");
    assert_eq!(
        issue.message,
        format!(
            "mesh network 10.10.0.0/16 overlaps address 10.10.0.1/16 of mesh blue's bridge \
             {bridge}; nothing of the mesh is built on this host (remove mesh blue from this \
             host first or choose another spec.network)"
        )
    );
}

#[test]
fn same_vni_in_another_network_builds_nothing_and_names_the_other_mesh() {
    let (sim, blue) = with_blue(vec![], &[]);
    let named = [("blue2".to_owned(), &blue, 1)];
    let plan = plan_host(
        &desired_named(&named, &sim.state),
        &sim.state,
        &scope_named(&["blue2"]),
    );
    assert!(plan.steps.is_empty(), "{:#?}", plan.steps);
    let vxlan = crate::addressing::vxlan_name("blue");
    assert_eq!(
        only_issue(&plan).message,
        format!(
            "VNI 77 on port 4789 is used by mesh blue's VXLAN device {vxlan}; remove mesh blue \
             from this host first"
        )
    );
}

#[test]
fn foreign_vxlan_with_the_vni_blocks_the_mesh_before_its_bridge() {
    // gx-12345678 of the base host: VNI 3, port 4789, not gremesh's.
    let state = base_state(&[]);
    let plan = plan_host(
        &desired_for(&[Spec::vxlan(3, vec![])], &state),
        &state,
        &scope(1),
    );
    assert!(plan.steps.is_empty(), "{:#?}", plan.steps);
    assert_eq!(
        only_issue(&plan).message,
        "VNI 3 on port 4789 is used by device gx-12345678, which gremesh did not create"
    );
}

#[test]
fn container_interface_of_another_mesh_is_named_as_gremesh_s() {
    let (sim, _) = with_blue(vec![(0, 10, 0)], &isolated(&[true]));
    // m0 (network index 1) wants eth2 in c0; make it want blue's eth1 instead.
    let mut desired = desired_named(
        &[("m0".into(), &Spec::vxlan(5, vec![(0, 10, 0)]), 1)],
        &sim.state,
    );
    desired[0].attachments[0].interface = IfName::new("eth1").unwrap();
    let plan = plan_host(&desired, &sim.state, &scope(1));
    let issue = only_issue(&plan);
    assert_eq!(issue.reason, IssueReason::ForeignDevice);
    assert_eq!(
        issue.message,
        "container c0 already has an interface eth1: mesh blue's interface of attachment blue-c0 \
         eth1; remove that attachment first (delete it, or `gremesh apply --prune` without it) \
         or set spec.interface to another name"
    );
    assert!(plan.steps.iter().all(|s| s.ns == Namespace::Host));
}

#[test]
fn bridge_name_messages_offer_spec_bridge_only_when_it_is_not_set() {
    let mut state = base_state(&[]);
    let mut desired = desired_for(&[Spec::vxlan(5, vec![])], &state);
    let default = desired[0].bridge.name.to_string();
    state.links.push(Link {
        name: default.clone(),
        kind: Some("bridge".into()),
        alias: Some("admin's".into()),
        ..Link::default()
    });
    let plan = plan_host(&desired, &state, &scope(1));
    assert_eq!(
        only_issue(&plan).message,
        format!(
            "a device named {default} exists that gremesh did not create; rename it or set \
             spec.bridge"
        )
    );
    desired[0].bridge.name = IfName::new("docker0").unwrap();
    let plan = plan_host(&desired, &state, &scope(1));
    assert_eq!(
        only_issue(&plan).message,
        "a device named docker0 exists that gremesh did not create; rename that device or choose \
         another spec.bridge"
    );
}

// --- the host's own networks ------------------------------------------------------------------

#[test]
fn mesh_network_overlapping_the_underlay_builds_nothing() {
    let state = base_state(&isolated(&[true]));
    // The tester's case: a mesh network equal to the underlay's.
    let mut desired = desired_for(&[Spec::vxlan(5, vec![(0, 10, 0)])], &state);
    desired[0].bridge.address = net("10.200.0.1/24");
    let plan = plan_host(&desired, &state, &scope(1));
    assert!(plan.steps.is_empty(), "{:#?}", plan.steps);
    let issue = only_issue(&plan);
    assert_eq!(issue.reason, IssueReason::NetworkOverlap);
    assert_eq!(
        issue.message,
        "mesh network 10.200.0.0/24 overlaps address 10.200.0.11/24 of device eth0, which \
         gremesh did not create; nothing of the mesh is built on this host (choose a \
         spec.network apart from the host's own networks)"
    );
}

#[test]
fn host_route_inside_the_mesh_network_blocks_it_but_wider_routes_do_not() {
    let mut state = base_state(&[]);
    let desired = desired_for(&[Spec::vxlan(5, vec![])], &state);
    let route = |dst: &str| RouteEntry {
        dst: dst.into(),
        gateway: Some("10.200.0.1".parse().unwrap()),
        dev: Some("eth0".into()),
        protocol: Some("static".into()),
    };
    // The default route and an aggregate around the mesh network are no conflict.
    state.routes.push(route("10.0.0.0/8"));
    assert!(plan_host(&desired, &state, &scope(1)).issues.is_empty());
    state.routes.push(route("10.10.3.0/24"));
    let plan = plan_host(&desired, &state, &scope(1));
    assert!(plan.steps.is_empty(), "{:#?}", plan.steps);
    let issue = only_issue(&plan);
    assert_eq!(issue.reason, IssueReason::NetworkOverlap);
    assert!(
        issue.message.starts_with(
            "mesh network 10.10.0.0/16 overlaps route 10.10.3.0/24 via 10.200.0.1 through \
             device eth0, which gremesh did not create; nothing"
        ),
        "{}",
        issue.message
    );
}

#[test]
fn container_with_a_network_overlapping_the_mesh_is_not_attached() {
    let state = base_state(&[("c0".into(), true, Net::Docker)]);
    // A mesh on Docker's 172.18.0.0/16 (free on the host, taken inside c0).
    let mut desired = desired_for(&[Spec::vxlan(5, vec![(0, 10, 0)])], &state);
    desired[0].bridge.address = net("172.18.0.1/16");
    desired[0].attachments[0].address = net("172.18.200.10/16");
    let plan = plan_host(&desired, &state, &scope(1));
    assert!(plan
        .issues
        .iter()
        .any(|i| i.reason == IssueReason::NetworkOverlap
            && i.message
                .contains("container c0 already has address 172.18.0.2/16 of device eth0")));
    assert!(plan.steps.iter().all(|s| s.ns == Namespace::Host));
    assert!(!plan
        .steps
        .iter()
        .any(|s| matches!(s.action, Action::AddVeth { .. })));
}

// --- containers without a namespace of their own ----------------------------------------------

#[test]
fn containers_sharing_a_namespace_are_refused_and_nothing_is_touched() {
    let mut guests = vec![
        ("c0".to_owned(), true, Net::Host),
        ("c1".to_owned(), true, Net::Isolated),
    ];
    guests.push(("c2".into(), true, Net::Isolated));
    let mut state = base_state(&guests);
    // c1 says "bridge" but runs in the host's namespace; c2 joined c1's.
    state.containers[1].network_mode = "bridge".into();
    state.containers[1].netns = state.netns.clone();
    state.containers[2].network_mode = format!("container:{}", state.containers[1].id);
    let spec = Spec::vxlan(5, vec![(0, 10, 1), (1, 11, 1), (2, 12, 1)]);
    let desired = desired_for(&[spec], &state);
    let plan = plan_host(&desired, &state, &scope(1));
    assert!(
        plan.steps.iter().all(|s| s.ns == Namespace::Host),
        "{:#?}",
        plan.steps
    );
    assert!(!plan
        .steps
        .iter()
        .any(|s| matches!(s.action, Action::AddVeth { .. })));
    let messages: Vec<&str> = plan
        .issues
        .iter()
        .filter(|i| i.reason == IssueReason::SharedNamespace)
        .map(|i| i.message.as_str())
        .collect();
    assert_eq!(messages.len(), 3, "{:#?}", plan.issues);
    assert!(
        messages[0].starts_with("container c0 uses the host's network namespace (--network host)")
    );
    assert!(messages[2].starts_with("container c2 uses the network namespace of container c1"));
}

#[test]
fn attachment_left_in_the_host_namespace_is_pruned_with_its_pair() {
    // What an earlier version left for a `--network host` container: both ends of the pair,
    // marked, in the host's namespace.
    let mut sim = sim_of(base_state(&[("c0".into(), true, Net::Host)]));
    let veth = crate::addressing::veth_name("m0", "m0-c0");
    for (name, role) in [
        (veth.as_str(), Role::Veth("m0-c0".into())),
        ("eth1", Role::Attach("m0-c0".into())),
    ] {
        sim.state.links.push(Link {
            name: name.into(),
            kind: Some("veth".into()),
            up: true,
            alias: Some(Marker::new("m0", role).to_string()),
            addrs: if name == "eth1" {
                vec![net("10.10.0.10/16")]
            } else {
                vec![]
            },
            ..Link::default()
        });
    }
    sim.pairs
        .push(((None, "eth1".into()), (None, veth.to_string())));
    sim.sync_routes();
    let desired = desired_for(&[Spec::vxlan(5, vec![(0, 10, 0)])], &sim.state);
    let plan = converge(&mut sim, &desired, &scope(1));
    let deletes: Vec<&Action> = plan
        .steps
        .iter()
        .map(|s| &s.action)
        .filter(|a| matches!(a, Action::DeleteVeth { .. } | Action::DeleteLink { .. }))
        .collect();
    assert_eq!(deletes.len(), 2, "{deletes:?}");
    assert!(deletes
        .iter()
        .all(|a| matches!(a, Action::DeleteVeth { .. })));
    assert!(sim.state.link("eth1").is_none() && sim.state.link(veth.as_str()).is_none());
    assert!(!sim
        .state
        .routes
        .iter()
        .any(|r| r.dst == "10.10.0.0/16" && r.dev.as_deref() == Some("eth1")));
    assert_eq!(only_issue(&plan).reason, IssueReason::SharedNamespace);
}

#[test]
fn interrupted_between_rename_and_marking_is_finished() {
    let mut sim = sim_of(base_state(&isolated(&[true])));
    let desired = desired_for(&[Spec::vxlan(42, vec![(0, 10, 1)])], &sim.state);
    let plan = plan_host(&desired, &sim.state, &scope(1));
    let rename = plan
        .steps
        .iter()
        .position(|s| matches!(s.action, Action::Rename { .. }))
        .unwrap();
    for step in &plan.steps[..=rename] {
        sim.apply(step).unwrap();
    }
    converge(&mut sim, &desired, &scope(1));
}

// --- earlier examples -------------------------------------------------------------------------

#[test]
fn converged_host_gets_an_empty_plan_and_container_side_is_guarded() {
    let spec = Spec {
        vxlan: true,
        stp: false,
        peers: vec!["host-b", "host-c"],
        mtu: None,
        key: 42,
        attachments: vec![(0, 10, 1)],
        docker_net: false,
    };
    let state = base_state(&isolated(&[true]));
    let desired = desired_for(std::slice::from_ref(&spec), &state);
    assert_eq!(desired[0].mtu, 1450);
    let plan = plan_host(&desired, &state, &scope(1));
    let first_container_step = plan
        .steps
        .iter()
        .position(|s| matches!(s.ns, Namespace::Container { .. }))
        .unwrap();
    assert_eq!(
        plan.steps[first_container_step].action,
        Action::CheckContainer
    );
    let mut sim = sim_of(state);
    apply_all(&mut sim, &plan);
    assert!(plan_host(&desired, &sim.state, &scope(1)).is_empty());
    let eth1 = sim
        .state
        .container_links
        .values()
        .flatten()
        .find(|l| l.name == "eth1")
        .unwrap();
    assert_eq!(eth1.mtu, 1450);
    assert_eq!(eth1.addrs, vec!["10.10.0.10/16".parse().unwrap()]);
}

#[test]
fn foreign_device_with_our_name_is_reported_not_touched() {
    let spec = Spec {
        vxlan: false,
        stp: false,
        peers: vec!["host-b"],
        mtu: None,
        key: 7,
        attachments: vec![],
        docker_net: false,
    };
    let mut state = base_state(&[]);
    let tunnel = crate::addressing::tunnel_name("m0", "host-b");
    state.links.push(Link {
        name: tunnel.to_string(),
        kind: Some("gretap".into()),
        alias: Some("someone else's".into()),
        ..Link::default()
    });
    let plan = plan_host(&desired_for(&[spec], &state), &state, &scope(1));
    assert!(plan
        .steps
        .iter()
        .all(|s| script::argv(s).iter().all(|w| w != tunnel.as_str())
            || !matches!(s.action, Action::DeleteLink { .. })));
    assert_eq!(plan.issues.len(), 1);
    assert_eq!(plan.issues[0].reason, IssueReason::ForeignDevice);
}

#[test]
fn wrong_gre_key_is_recreated() {
    let spec = Spec {
        vxlan: false,
        stp: false,
        peers: vec!["host-b"],
        mtu: None,
        key: 7,
        attachments: vec![],
        docker_net: false,
    };
    let state = base_state(&[]);
    let desired = desired_for(&[spec], &state);
    let mut sim = sim_of(state);
    let first = plan_host(&desired, &sim.state, &scope(1));
    apply_all(&mut sim, &first);
    let name = desired[0].tunnels[0].name.to_string();
    sim.link_mut(&None, &name)
        .unwrap()
        .gre
        .as_mut()
        .unwrap()
        .ikey = None;
    let plan = plan_host(&desired, &sim.state, &scope(1));
    assert!(matches!(&plan.steps[0].action, Action::DeleteLink { name: n } if n.as_str() == name));
    assert!(plan
        .steps
        .iter()
        .any(|s| matches!(&s.action, Action::AddGretap { key: 7, .. })));
}

#[test]
fn stopped_container_gets_an_issue_and_no_container_step() {
    let spec = Spec {
        vxlan: true,
        stp: false,
        peers: vec![],
        mtu: None,
        key: 1,
        attachments: vec![(0, 10, 1)],
        docker_net: false,
    };
    let state = base_state(&isolated(&[false]));
    let plan = plan_host(&desired_for(&[spec], &state), &state, &scope(1));
    assert!(plan.steps.iter().all(|s| s.ns == Namespace::Host));
    assert_eq!(plan.issues[0].reason, IssueReason::ContainerNotRunning);
}

#[test]
fn marker_on_foreign_mesh_is_left_alone_outside_scope() {
    let mut state = base_state(&[]);
    state.links.push(Link {
        name: "gm-other".into(),
        kind: Some("bridge".into()),
        alias: Some(Marker::new("other", crate::addressing::Role::Bridge).to_string()),
        ..Link::default()
    });
    let plan = plan_host(&[], &state, &scope(1));
    assert!(plan.is_empty());
}

#[test]
fn interrupted_vxlan_of_other_mesh_with_same_vni_is_replaced_first() {
    let sp = |vxlan, key| Spec {
        vxlan,
        stp: false,
        peers: vec![],
        mtu: None,
        key,
        attachments: vec![],
        docker_net: false,
    };
    let old = [sp(false, 1), sp(true, 1)];
    let new = [sp(true, 1), sp(true, 2)];
    let state = base_state(&[]);
    let mut sim = sim_of(state);
    let old_plan = plan_host(&desired_for(&old, &sim.state), &sim.state, &scope(2));
    for step in old_plan.steps.iter().take(7) {
        sim.apply(step).unwrap();
    }
    let desired = desired_for(&new, &sim.state);
    let plan = plan_host(&desired, &sim.state, &scope(2));
    apply_all(&mut sim, &plan);
}
