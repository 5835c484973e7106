"""Lab end-to-end: a VXLAN mesh over three Docker hosts converged by `gremesh apply`."""

import subprocess
import time

from conftest import (HOSTS, LAB, apply, attachment_yaml, docker_exec, gremesh_links, in_container,
                      mesh_yaml, on_host, write)

ADDRS = {"host-a": "10.10.1.10", "host-b": "10.10.2.10", "host-c": "10.10.3.10"}
MTU = 1450


def three_host_mesh(tmp_path, extra_mesh=""):
    text = mesh_yaml(extra=extra_mesh)
    for host, addr in ADDRS.items():
        text += attachment_yaml("web-" + host[-1], host, "web-" + host[-1], addr)
    return write(tmp_path, "mesh.yaml", text)


def test_all_pairs_ping_and_mtu_everywhere(fresh, tmp_path):
    res, report = apply(three_host_mesh(tmp_path))
    assert [m["ready"] for m in report["meshes"]] == [True], res.stdout
    assert report["meshes"][0]["mtu"] == MTU
    for h in report["hosts"]:
        assert h["converged"] and "error" not in h, h
        assert h["roundTrips"] == 2, h  # one probe, one apply (which probes again)
    for src, addr in ADDRS.items():
        for dst, daddr in ADDRS.items():
            if src != dst:
                docker_exec(src, "web-" + src[-1], "ping", "-c", "1", "-W", "2", daddr)

    # S01 (VXLAN half): bridge, tunnel, host veth and container eth1 all carry the mesh MTU.
    for host in HOSTS:
        kinds = {l["linkinfo"]["info_kind"]: l["mtu"] for l in gremesh_links(host)}
        assert kinds == {"bridge": MTU, "vxlan": MTU, "veth": MTU}, kinds
        inner = in_container(host, "web-" + host[-1], "ip", "-j", "link", "show", "eth1").stdout
        assert f'"mtu":{MTU}' in inner


def test_dont_fragment_ping_at_mtu_minus_28_passes_and_one_more_fails(fresh, tmp_path):
    apply(three_host_mesh(tmp_path))
    size = MTU - 28
    in_container("host-a", "web-a", "ping", "-M", "do", "-c", "2", "-W", "2", "-s", str(size),
                 ADDRS["host-b"])
    too_big = in_container("host-a", "web-a", "ping", "-M", "do", "-c", "2", "-W", "2", "-s",
                           str(size + 1), ADDRS["host-b"], check=False)
    assert too_big.returncode != 0


def test_second_apply_changes_nothing_and_hosts_see_no_event(fresh, tmp_path):
    manifest = three_host_mesh(tmp_path)
    apply(manifest)
    time.sleep(3)  # let the kernel finish IPv6 duplicate address detection on the new links
    monitors = [subprocess.Popen([str(LAB), "sh", h, "ip", "-o", "monitor",
                                  "link", "address", "route"],
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
                for h in HOSTS]
    time.sleep(0.5)
    _, report = apply(manifest)
    time.sleep(0.5)
    for m in monitors:
        m.terminate()
    events = [m.communicate(timeout=10)[0] for m in monitors]
    assert all(h["planned"] == [] and h["applied"] == 0 for h in report["hosts"]), report
    assert all(h["roundTrips"] == 1 for h in report["hosts"]), report
    assert events == ["", "", ""], events


def test_broadcast_arrives_exactly_once_on_every_other_host(fresh, tmp_path):
    """S11: three hosts, one tunnel per peer on one bridge, and no loop."""
    apply(three_host_mesh(tmp_path))
    captures = {
        host: subprocess.Popen(
            ["nsenter", "-t", on_host(host, "docker", "inspect", "--format", "{{.State.Pid}}",
                                      "web-" + host[-1]).stdout.strip(),
             "-n", "timeout", "4", "tcpdump", "-l", "-n", "-i", "eth1",
             "arp and host 10.10.99.99"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        for host in ("host-b", "host-c")
    }
    time.sleep(1.5)
    docker_exec("host-a", "web-a", "arping", "-c", "1", "-w", "1", "-I", "eth1", "10.10.99.99",
                check=False)
    seen = {h: p.communicate(timeout=10)[0].count("who-has 10.10.99.99") for h, p in captures.items()}
    assert seen == {"host-b": 1, "host-c": 1}, seen


def test_hosts_still_talk_when_a_third_goes_away(fresh, tmp_path):
    """S11: losing host-c must not cut host-a from host-b."""
    apply(three_host_mesh(tmp_path))
    subprocess.run(["ip", "link", "set", "gmlab-c", "down"], check=True)
    try:
        docker_exec("host-a", "web-a", "ping", "-c", "2", "-W", "2", ADDRS["host-b"])
        docker_exec("host-b", "web-b", "ping", "-c", "2", "-W", "2", ADDRS["host-a"])
    finally:
        subprocess.run(["ip", "link", "set", "gmlab-c", "up"], check=True)


def test_bulk_transfers_complete_both_ways(fresh, tmp_path):
    """S01/S02: a 10 MB copy and 5 MB HTTP downloads complete in both directions."""
    apply(three_host_mesh(tmp_path))
    for host, peer in (("host-a", "host-b"), ("host-b", "host-a")):
        name = "web-" + host[-1]
        docker_exec(host, name, "sh", "-c",
                    "mkdir -p /srv && dd if=/dev/urandom of=/srv/f5 bs=1024 count=5120 2>/dev/null"
                    " && dd if=/dev/urandom of=/srv/f10 bs=1024 count=10240 2>/dev/null"
                    " && (httpd -p 8080 -h /srv || true)")
    # No `wget -T`: the static busybox wget crashes with it; the subprocess timeout bounds it.
    for src, dst in (("host-a", "host-b"), ("host-b", "host-a")):
        for f, size in (("f5", 5 * 1024 * 1024), ("f10", 10 * 1024 * 1024)):
            out = docker_exec(src, "web-" + src[-1], "sh", "-c",
                              f"wget -q -O /tmp/{f} http://{ADDRS[dst]}:8080/{f} && wc -c < /tmp/{f}",
                              timeout=60).stdout.strip()
            assert int(out) == size, (src, dst, f, out)


def test_graph_renders_the_mesh_with_tunnels_up(fresh, tmp_path):
    """`gremesh graph` gives DOT that Graphviz parses, with every tunnel of the mesh up."""
    manifest = three_host_mesh(tmp_path)
    apply(manifest)
    from conftest import HOSTS_YAML, gremesh
    res = gremesh("graph", "-f", str(HOSTS_YAML), "-f", str(manifest))
    assert res.returncode == 0, res.stderr
    assert res.stdout.count('label="up"') == 3 and 'label="down"' not in res.stdout, res.stdout
    for addr in ADDRS.values():
        assert addr in res.stdout
    svg = subprocess.run(["dot", "-Tsvg"], input=res.stdout, capture_output=True, text=True, check=True)
    assert "<svg" in svg.stdout


def test_blocked_encapsulation_marks_exactly_that_pair_down(fresh, tmp_path):
    """S14 (VXLAN half): host-b drops VXLAN from host-a only. Devices are built, but the pair's
    health check fails: exactly host-a/host-b is reported down, with a hint, and the mesh is
    not ready; when the firewall rule goes, the next pass reports it up again."""
    manifest = three_host_mesh(tmp_path)
    rule = ["INPUT", "-p", "udp", "--dport", "4789", "-s", "10.200.0.11", "-j", "DROP"]
    on_host("host-b", "iptables", "-A", *rule)
    try:
        res, report = apply(manifest, check=False)
        assert res.returncode == 0, res.stderr  # no host failed: devices were built
        assert not report["meshes"][0]["ready"]
        up = {h["host"]: set(h["meshes"][0]["peersUp"]) for h in report["hosts"]}
        unanswered = {h["host"]: set(h["meshes"][0]["peersUnanswered"]) for h in report["hosts"]}
        assert up == {"host-a": {"host-c"}, "host-b": {"host-c"}, "host-c": {"host-a", "host-b"}}, up
        assert unanswered["host-a"] == {"host-b"} and unanswered["host-b"] == {"host-a"}, unanswered
        text = gremesh_text(manifest)
        assert "no answer across the tunnel to host-b" in text
    finally:
        on_host("host-b", "iptables", "-D", *rule)
    _, report = apply(manifest)
    assert report["meshes"][0]["ready"]


def gremesh_text(manifest):
    from conftest import HOSTS_YAML, gremesh
    return gremesh("apply", "-f", str(HOSTS_YAML), "-f", str(manifest)).stdout
