"""Lab end-to-end: what the plan must not take from a host — a container's own routes, another
mesh's devices, the host's own networks, the namespace of a container that has none of its own.
"""

import hashlib
import json

from conftest import (HOSTS, apply, attachment_yaml, gremesh_links, in_container, lab, links,
                      mesh_yaml, on_host, write)



def blocked_apply(path, extra=()):
    """`gremesh apply` of a spec with a blocked object: exit status 1, and the report."""
    res, report = apply(path, extra=extra, check=False)
    assert res.returncode == 1, (res.returncode, res.stdout, res.stderr)
    return report

def routes(host, container):
    return json.loads(in_container(host, container, "ip", "-j", "route").stdout)


def host_routes(host):
    return json.loads(on_host(host, "ip", "-j", "route", "show", "table", "main").stdout)


def report_of(report, host):
    return next(h for h in report["hosts"] if h["host"] == host)


def issues(report, host, reason):
    return [i for i in report_of(report, host)["issues"] if i["reason"] == reason]


def foreign_links(host):
    """The host's links that are not gremesh's, as (name, alias, addresses)."""
    return sorted((l["ifname"], l.get("ifalias", ""), l.get("mtu")) for l in links(host)
                  if not l.get("ifalias", "").startswith("gremesh:"))


def gremesh_devices(host):
    """gremesh's links on a host, in the attributes a pass could change."""
    return sorted((l["ifname"], l["ifalias"], l["mtu"], l.get("master"), l["address"],
                   "UP" in l["flags"]) for l in gremesh_links(host))


def hashed(prefix, *parts):
    """A device name as gremesh derives it (addressing.rs: prefix + 8 hex digits of SHA-256)."""
    digest = hashlib.sha256(b"".join(p.encode() + b"\0" for p in parts)).hexdigest()
    return prefix + digest[:8]


def test_container_routes_are_kept_and_only_gremesh_s_own_are_removed(fresh, tmp_path):
    """Item 1: a route whose destination Docker already routes is reported, not replaced; a
    route dropped from the spec is removed; detaching gives the container its routes back."""
    on_host("host-a", "docker", "network", "create", "--subnet", "172.30.0.0/24", "lan", check=False)
    on_host("host-a", "docker", "rm", "-f", "web-a")
    on_host("host-a", "docker", "run", "-d", "--name", "web-a", "--network", "lan",
            "--stop-signal", "KILL", "gremesh-lab/busybox:latest", "sleep", "1000000")
    try:
        before = routes("host-a", "web-a")
        assert any(r["dst"] == "default" and r["dev"] == "eth0" for r in before), before
        mesh = mesh_yaml(hosts=["host-a", "host-b"])

        def attach(*to):
            lines = "".join(f"    - to: {t}\n" + (f"      via: {v}\n" if v else "") for t, v in to)
            return attachment_yaml("web-a", "host-a", "web-a", "10.10.1.10",
                                   extra=f"  routes:\n{lines}")

        both = [("0.0.0.0/0", "10.10.1.1"), ("192.168.50.0/24", None), ("192.168.51.0/24", None)]
        report = blocked_apply(write(tmp_path, "m.yaml", mesh + attach(*both)))
        conflicts = issues(report, "host-a", "RouteConflict")
        assert len(conflicts) == 1, report_of(report, "host-a")
        message = conflicts[0]["message"]
        for word in ("container web-a", "0.0.0.0/0", "via 172.30.0.1", "eth0"):
            assert word in message, message
        now = routes("host-a", "web-a")
        assert [r for r in now if r["dst"] == "default"] == [r for r in before if r["dst"] == "default"]
        ours = {r["dst"] for r in now if r.get("dev") == "eth1"}
        assert ours == {"10.10.0.0/16", "192.168.50.0/24", "192.168.51.0/24"}, now
        assert report_of(report, "host-a")["attachments"], report  # the rest converged

        # A route dropped from the spec goes; the connected route stays; then nothing to do.
        manifest = write(tmp_path, "m.yaml", mesh + attach(("192.168.50.0/24", None)))
        _, report = apply(manifest)
        assert any("ip route del 192.168.51.0/24 dev eth1" in s
                   for s in report_of(report, "host-a")["planned"]), report
        assert {r["dst"] for r in routes("host-a", "web-a") if r.get("dev") == "eth1"} == \
            {"10.10.0.0/16", "192.168.50.0/24"}
        _, report = apply(manifest)
        assert report_of(report, "host-a")["planned"] == [], report

        # Detach: the container's routes are exactly what Docker gave it.
        _, report = apply(write(tmp_path, "m.yaml", mesh), extra=("--prune",))
        assert "error" not in report_of(report, "host-a"), report
        assert routes("host-a", "web-a") == before
    finally:
        lab("run", "host-a", "web-a")
        on_host("host-a", "docker", "network", "rm", "lan", check=False)


def test_a_renamed_copy_of_a_mesh_is_refused_with_the_original_named(fresh, tmp_path):
    """Item 3: another mesh's devices are in the way like foreign ones; nothing of the copy is
    built on any host and the original is untouched."""
    apply(write(tmp_path, "blue.yaml", mesh_yaml(name="blue", key=77, network="10.20.0.0/16")))
    blue = {h: gremesh_devices(h) for h in HOSTS}
    blue_routes = {h: host_routes(h) for h in HOSTS}

    copies = {
        "blue2": ("10.20.0.0/16", "gateway address 10.20.{i}.1 is already on mesh blue's bridge"),
        "blue3": ("10.21.0.0/16", "VNI 77 on port 4789 is used by mesh blue's VXLAN device"),
    }
    for name, (network, expect) in copies.items():
        report = blocked_apply(write(tmp_path, f"{name}.yaml",
                                     mesh_yaml(name=name, key=77, network=network)))
        for i, host in enumerate(HOSTS, start=1):
            h = report_of(report, host)
            assert "error" not in h and h["planned"] == [] and h["applied"] == 0, h
            found = [x["message"] for x in h["issues"] if x["mesh"] == name]
            assert len(found) == 1, h
            assert found[0].startswith(expect.format(i=i)), found
            assert found[0].endswith("remove mesh blue from this host first"), found
        assert not report["meshes"][0]["ready"]
        for host in HOSTS:
            assert gremesh_devices(host) == blue[host]
            assert host_routes(host) == blue_routes[host]


def test_a_mesh_overlapping_a_network_of_the_host_is_not_built_there(fresh, tmp_path):
    """Item 4: an address of the host's own inside the mesh network keeps the mesh off that
    host (its connected route would take the traffic); the other hosts converge."""
    on_host("host-b", "ip", "link", "add", "ovl0", "type", "veth", "peer", "name", "ovl1")
    on_host("host-b", "ip", "addr", "add", "10.77.5.1/24", "dev", "ovl0")
    on_host("host-b", "ip", "link", "set", "ovl0", "up")
    try:
        before = host_routes("host-b")
        report = blocked_apply(write(tmp_path, "m.yaml", mesh_yaml(network="10.77.0.0/16")))
        found = issues(report, "host-b", "NetworkOverlap")
        assert len(found) == 1, report_of(report, "host-b")
        assert "mesh network 10.77.0.0/16 overlaps address 10.77.5.1/24 of device ovl0" in \
            found[0]["message"], found
        assert report_of(report, "host-b")["planned"] == []
        assert gremesh_links("host-b") == []
        assert host_routes("host-b") == before
        assert all(report_of(report, h)["converged"] for h in ("host-a", "host-c")), report
    finally:
        on_host("host-b", "ip", "link", "del", "ovl0", check=False)


def test_containers_without_a_namespace_of_their_own_are_refused(fresh, tmp_path):
    """Item 5 (and 6): `--network host` and `--network container:` containers are reported and
    nothing lands in the host's namespace; what an earlier version left there (both ends of a
    veth pair, marked) is removed in one pass without failing."""
    for name, net in (("hn", "host"), ("cn", "container:web-a")):
        on_host("host-a", "docker", "rm", "-f", name, check=False)
        on_host("host-a", "docker", "run", "-d", "--name", name, "--network", net,
                "--stop-signal", "KILL", "gremesh-lab/busybox:latest", "sleep", "1000000")
    try:
        # Leftovers of the old behaviour: the pair for `hn` entirely in the host's namespace.
        veth = hashed("gv-", "veth", "m1", "hn")
        on_host("host-a", "ip", "link", "add", veth, "type", "veth", "peer", "name", "eth1")
        on_host("host-a", "ip", "link", "set", veth, "alias", "gremesh:m1:veth:hn")
        on_host("host-a", "ip", "link", "set", "eth1", "alias", "gremesh:m1:attach:hn")
        on_host("host-a", "ip", "addr", "add", "10.10.1.10/16", "dev", "eth1")
        on_host("host-a", "ip", "link", "set", "eth1", "up")
        foreign = foreign_links("host-a")

        text = (mesh_yaml(hosts=["host-a", "host-b"])
                + attachment_yaml("hn", "host-a", "hn", "10.10.1.10")
                + attachment_yaml("cn", "host-a", "cn", "10.10.1.11"))
        manifest = write(tmp_path, "m.yaml", text)
        report = blocked_apply(manifest)
        a = report_of(report, "host-a")
        assert "error" not in a, a
        shared = {i["attachment"]: i["message"] for i in issues(report, "host-a", "SharedNamespace")}
        assert shared.keys() == {"hn", "cn"}, a
        assert "--network host" in shared["hn"]
        assert "container web-a" in shared["cn"]
        names = {l["ifname"] for l in links("host-a")}
        assert veth not in names and "eth1" not in names, names
        assert not any(n.startswith("gc-") for n in names), names
        assert not any(r.get("dev") == "eth1" for r in host_routes("host-a"))
        assert foreign_links("host-a") == [f for f in foreign if f[0] != "eth1"]
        web_a = json.loads(in_container("host-a", "web-a", "ip", "-j", "link").stdout)
        assert {l["ifname"] for l in web_a} == {"lo"}, web_a

        # No flapping: the next pass has nothing to do and reports the same.
        report = blocked_apply(manifest)
        a = report_of(report, "host-a")
        assert a["planned"] == [] and a["applied"] == 0, a
        assert {i["attachment"] for i in issues(report, "host-a", "SharedNamespace")} == {"hn", "cn"}
    finally:
        on_host("host-a", "docker", "rm", "-f", "hn", "cn", check=False)
        on_host("host-a", "ip", "link", "del", "eth1", check=False)
