"""Lab end-to-end: what `gremesh apply`, `plan` and `delete` promise on the command line —
hosts taken out of a mesh are cleaned, meshes can be deleted (also by name), the exit status
says when an object is blocked, bad input that only the CLI can see is rejected before any
login, and a pass without changes still judges every tunnel."""

import json

from conftest import (HOSTS, HOSTS_YAML, STATE, accepted_logins, apply, attachment_yaml, docker_exec,
                      gremesh, gremesh_links, in_container, links, mesh_yaml, on_host, write)

ADDRS = {"host-a": "10.10.1.10", "host-b": "10.10.2.10", "host-c": "10.10.3.10"}
ADDRS_UNDERLAY = {"host-a": "10.200.0.11", "host-b": "10.200.0.12", "host-c": "10.200.0.13"}


def mesh_with_attachments(tmp_path, hosts=HOSTS, name="mesh.yaml", **kw):
    text = mesh_yaml(hosts=hosts, **kw)
    for i, host in enumerate(hosts):
        text += attachment_yaml("web-" + host[-1], host, "web-" + host[-1], f"10.10.{i + 1}.10")
    return write(tmp_path, name, text)


def host_report(report, host):
    return next(h for h in report["hosts"] if h["host"] == host)


def floods(host):
    """The VXLAN flood entries (head-end replication to peers) of a host, sorted."""
    entries = json.loads(on_host(host, "bridge", "-j", "fdb", "show").stdout)
    return sorted((e["ifname"], e["dst"]) for e in entries
                  if e["mac"] == "00:00:00:00:00:00" and e.get("dst"))


def vxlan_name(host):
    return next(l["ifname"] for l in gremesh_links(host) if l["linkinfo"]["info_kind"] == "vxlan")


def link_names(host):
    return sorted(l["ifname"] for l in links(host))


def test_host_taken_out_of_a_mesh_is_cleaned_by_apply(fresh, tmp_path):
    apply(mesh_with_attachments(tmp_path))
    assert gremesh_links("host-c")

    _, report = apply(mesh_with_attachments(tmp_path, hosts=["host-a", "host-b"], name="two.yaml"))
    assert gremesh_links("host-c") == [], "host-c still carries mesh devices"
    assert "eth1" not in docker_exec("host-c", "web-c", "ip", "link").stdout
    assert host_report(report, "host-c")["planned"], "host-c was not visited"
    for host in ("host-a", "host-b"):
        mesh = host_report(report, host)["meshes"][0]
        assert (mesh["tunnelsUp"], mesh["tunnelsExpected"]) == (1, 1), mesh
        floods = [e for e in json.loads(on_host(host, "bridge", "-j", "fdb", "show").stdout)
                  if e["mac"] == "00:00:00:00:00:00" and e.get("dst")]
        assert [e["dst"] for e in floods] == [ADDRS_UNDERLAY["host-a" if host == "host-b" else "host-b"]], floods
    docker_exec("host-a", "web-a", "ping", "-c", "1", "-W", "2", ADDRS["host-b"])
    _, again = apply(mesh_with_attachments(tmp_path, hosts=["host-a", "host-b"], name="two.yaml"))
    assert all(h["planned"] == [] for h in again["hosts"])


def test_delete_removes_the_mesh_everywhere_and_keeps_the_containers(fresh, tmp_path):
    manifest = mesh_with_attachments(tmp_path)
    apply(manifest)
    before = {h: link_names(h) for h in HOSTS}

    dry = gremesh("delete", "--dry-run", "-f", str(HOSTS_YAML), "--mesh", "m1")
    assert dry.returncode == 0, dry.stderr
    assert "steps" in dry.stdout and {h: link_names(h) for h in HOSTS} == before

    res = gremesh("delete", "-o", "json", "-f", str(HOSTS_YAML), "-f", str(manifest))
    assert res.returncode == 0, res.stdout + res.stderr
    for host in HOSTS:
        assert gremesh_links(host) == [], host
        assert "eth1" not in docker_exec(host, "web-" + host[-1], "ip", "link").stdout
        state = on_host(host, "docker", "inspect", "-f", "{{.State.Running}}", "web-" + host[-1])
        assert state.stdout.strip() == "true"
    again = gremesh("delete", "-o", "json", "-f", str(HOSTS_YAML), "--mesh", "m1")
    assert again.returncode == 0 and all(h["planned"] == [] for h in json.loads(again.stdout)["hosts"])


def test_blocked_attachment_makes_apply_exit_1_and_says_why(fresh, tmp_path):
    text = mesh_yaml() + attachment_yaml("ghost", "host-b", "does-not-exist", "10.10.2.20")
    res, report = apply(write(tmp_path, "ghost.yaml", text), check=False)
    assert res.returncode == 1, res.stdout
    issues = host_report(report, "host-b")["issues"]
    assert [(i["attachment"], i["reason"]) for i in issues] == [("ghost", "ContainerMissing")]
    text_out = gremesh("apply", "-f", str(HOSTS_YAML), "-f", str(tmp_path / "ghost.yaml")).stdout
    assert "blocked (1 issue, see below)" in text_out and "ContainerMissing" in text_out, text_out
    # Everything that is not blocked was still built.
    assert report["meshes"][0]["ready"], report["meshes"]


def test_inputs_only_the_cli_sees_are_rejected_before_any_login(lab_up, tmp_path):
    logins = {h: accepted_logins(h) for h in HOSTS}
    hosts_without_secret = "\n---\n".join(d for d in HOSTS_YAML.read_text().split("\n---\n")
                                          if "kind: Secret" not in d)
    cases = {
        "missing Secret": (write(tmp_path, "nosecret.yaml", hosts_without_secret),
                           "spec.sshKeySecretRef: Secret gremesh-lab-ssh"),
        "mesh over the underlay": (write(tmp_path, "over.yaml", mesh_yaml(network="10.200.0.0/16")),
                                   "spec.network: 10.200.0.0/16 contains 10.200.0.11"),
        "typo in kind": (write(tmp_path, "typo.yaml", mesh_yaml().replace("kind: GreMesh", "kind: GreMash")),
                         "(GreMash m1): gremesh.io/v1alpha1 GreMash is not a kind gremesh knows"),
    }
    # A file cut in the wrong place: the key ends up as a document of its own.
    cut = HOSTS_YAML.read_text().replace("stringData:\n  ssh-privatekey: |\n", "---\n")
    cases["broken file"] = (write(tmp_path, "cut.yaml", cut), "document 2")
    key_body = [l for l in (STATE / "id_ed25519").read_text().splitlines() if not l.startswith("-----")]
    for what, (path, expected) in cases.items():
        alone = what in ("missing Secret", "broken file")
        files = ["-f", str(path)] if alone else ["-f", str(HOSTS_YAML), "-f", str(path)]
        res = gremesh("apply", *files)
        assert res.returncode == 2, (what, res.returncode, res.stderr)
        assert expected in res.stderr, (what, res.stderr)
        assert not any(line in res.stdout + res.stderr for line in key_body), (what, "key shown")
    assert {h: accepted_logins(h) for h in HOSTS} == logins


def test_underlay_address_not_on_the_host_fails_that_host_and_changes_nothing(fresh, tmp_path):
    """host-b's spec.underlayAddress is not one of its addresses: host-b fails with nothing
    changed, and its peers keep their tunnels to it as they are (no tunnel to an address that
    carries nothing) instead of being repointed."""
    manifest = mesh_with_attachments(tmp_path)
    apply(manifest)
    before = {h: (link_names(h), floods(h)) for h in HOSTS}
    docs = HOSTS_YAML.read_text().split("---")
    wrong = [d.replace("underlayAddress: 10.200.0.12", "underlayAddress: 10.200.0.99") for d in docs]
    hosts = write(tmp_path, "hosts.yaml", "---".join(wrong))
    res = gremesh("apply", "-o", "json", "-f", str(hosts), "-f", str(manifest))
    assert res.returncode == 1
    report = json.loads(res.stdout)
    b = host_report(report, "host-b")
    assert "spec.underlayAddress: 10.200.0.99 is not an address of this host" in b["error"], b
    assert b["failure"] == "Misconfigured" and b["planned"] == []
    for host in ("host-a", "host-c"):
        h = host_report(report, host)
        assert h["planned"] == [], h
        assert [i["reason"] for i in h["issues"]] == ["LayoutFailed"], h
        assert "host host-b: its spec.underlayAddress" in h["issues"][0]["message"]
    assert {h: (link_names(h), floods(h)) for h in HOSTS} == before
    docker_exec("host-a", "web-a", "ping", "-c", "1", "-W", "2", ADDRS["host-b"])


def test_a_mesh_a_host_cannot_build_does_not_stop_its_other_meshes(fresh, tmp_path):
    """A gretap mesh on this GRE-less kernel is held on its hosts (Unsupported); the VXLAN mesh
    sharing those hosts still heals its drift in the same pass."""
    manifest = mesh_with_attachments(tmp_path)
    apply(manifest)
    on_host("host-a", "bridge", "fdb", "del", "00:00:00:00:00:00", "dev",
            vxlan_name("host-a"), "dst", "10.200.0.12")
    gre = write(tmp_path, "gre.yaml", mesh_yaml(name="mg", hosts=["host-a", "host-b"],
                                               encapsulation="gretap", key=9,
                                               network="10.90.0.0/16"))
    res, report = apply(manifest, gre, check=False)
    assert res.returncode == 1
    a = host_report(report, "host-a")
    assert "error" not in a and [i["reason"] for i in a["issues"]] == ["Unsupported"], a
    assert any("fdb append" in step for step in a["planned"]), a
    assert next(m for m in report["meshes"] if m["mesh"] == "m1")["ready"], report["meshes"]


def test_routes_of_an_attachment_from_other_files_are_not_taken_over(fresh, tmp_path):
    """Two meshes on one container, their attachments applied from separate files: the second
    one's route to a destination the first already routes is a conflict, not a takeover, and
    alternating the files changes nothing."""
    meshes = (mesh_yaml(name="ma", hosts=["host-a", "host-b"], key=50, network="10.30.0.0/16")
              + "---\n" + mesh_yaml(name="mb", hosts=["host-a", "host-b"], key=51,
                                   network="10.31.0.0/16"))
    m = write(tmp_path, "meshes.yaml", meshes)
    x = write(tmp_path, "x.yaml", attachment_yaml(
        "x", "host-a", "web-a", "10.30.1.10", mesh="ma",
        extra="  interface: eth1\n  routes: [{to: 192.168.150.0/24, via: 10.30.2.1}]\n"))
    y = write(tmp_path, "y.yaml", attachment_yaml(
        "y", "host-a", "web-a", "10.31.1.10", mesh="mb",
        extra="  interface: eth2\n  routes: [{to: 192.168.150.0/24, via: 10.31.2.1}]\n"))
    apply(m, x)
    res, report = apply(m, y, check=False)
    assert res.returncode == 1
    issues = host_report(report, "host-a")["issues"]
    assert [(i["attachment"], i["reason"]) for i in issues] == [("y", "RouteConflict")], issues
    route = docker_exec("host-a", "web-a", "ip", "route", "show", "192.168.150.0/24").stdout
    assert "dev eth1" in route, route
    _, again = apply(m, x)
    assert host_report(again, "host-a")["planned"] == []
    res, again = apply(m, y, check=False)
    assert host_report(again, "host-a")["planned"] == []


def test_connected_routes_deleted_by_hand_are_put_back(fresh, tmp_path):
    manifest = mesh_with_attachments(tmp_path)
    apply(manifest)
    in_container("host-b", "web-b", "ip", "route", "del", "10.10.0.0/16", "dev", "eth1")
    bridge = next(l["ifname"] for l in gremesh_links("host-a")
                  if l["linkinfo"]["info_kind"] == "bridge")
    on_host("host-a", "ip", "route", "del", "10.10.0.0/16", "dev", bridge)
    _, report = apply(manifest)
    for host in ("host-a", "host-b"):
        assert any("proto kernel scope link" in s for s in host_report(report, host)["planned"])
    assert report["meshes"][0]["ready"]
    docker_exec("host-b", "web-b", "ping", "-c", "1", "-W", "2", ADDRS["host-a"])
    _, again = apply(manifest)
    assert all(h["planned"] == [] for h in again["hosts"])


def test_pass_without_changes_still_checks_every_tunnel_with_unpinned_subnets(fresh, tmp_path):
    """A no-op pass of a mesh whose subnets gremesh chose: the probe's health check covers every
    peer (one round trip), so a pair whose encapsulation gets blocked afterwards is reported."""
    text = ("apiVersion: gremesh.io/v1alpha1\nkind: GreMesh\nmetadata: {name: auto}\nspec:\n"
            "  hosts: [{name: host-a}, {name: host-b}, {name: host-c}]\n"
            "  encapsulation: vxlan\n  key: 77\n  network: 10.77.0.0/16\n")
    manifest = write(tmp_path, "auto.yaml", text)
    _, report = apply(manifest)
    assert report["meshes"][0]["ready"], report
    rule = ["INPUT", "-p", "udp", "--dport", "4789", "-s", "10.200.0.11", "-j", "DROP"]
    on_host("host-b", "iptables", "-A", *rule)
    try:
        res, report = apply(manifest, check=False)
        assert all(h["planned"] == [] for h in report["hosts"]), report
        assert all(h["roundTrips"] == 1 for h in report["hosts"]), report
        assert not report["meshes"][0]["ready"]
        unanswered = {h["host"]: h["meshes"][0]["peersUnanswered"] for h in report["hosts"]}
        assert unanswered == {"host-a": ["host-b"], "host-b": ["host-a"], "host-c": []}, unanswered
    finally:
        on_host("host-b", "iptables", "-D", *rule)
    _, report = apply(manifest)
    assert report["meshes"][0]["ready"]


def test_hosts_without_changes_judge_a_rebuilt_peer_after_it_was_rebuilt(fresh, tmp_path):
    """host-b loses its mesh (as after a reboot); one apply rebuilds only host-b, and the
    other hosts — whose own probe ran while host-b was still empty — ask it again, so the mesh
    is reported ready in that same pass."""
    manifest = mesh_with_attachments(tmp_path)
    apply(manifest)
    for l in gremesh_links("host-b"):
        on_host("host-b", "ip", "link", "del", "dev", l["ifname"], check=False)
    _, report = apply(manifest)
    assert host_report(report, "host-b")["planned"]
    assert host_report(report, "host-a")["planned"] == host_report(report, "host-c")["planned"] == []
    assert report["meshes"][0]["ready"], json.dumps(report["hosts"], indent=1)
    for host in ("host-a", "host-c"):
        assert host_report(report, host)["meshes"][0]["peersUnanswered"] == []
