"""A gretap mesh over three QEMU guests with Debian's kernel: real GRE, real Docker.

One mesh `gre1` (network 10.60.0.0/16, subnets pinned to 10.60.{1,2,3}.0/24, key 7, the
default encapsulation gretap) with one container per guest attached at 10.60.N.10. The tests
share it and run in file order; the last ones change it (key drift, a firewall, STP).
"""

import json
import time

import pytest

from vmlab_helpers import (GUESTS, HOSTS_YAML, apply, gremesh, gremesh_links, guest_ip, host_report, in_container,
                           links, parallel, plan, q, reset_guest, sh, sh_bg, start_container)

MESH = "gre1"
KEY = 7
MTU = 1458  # 1500 underlay - 42 bytes of gretap with a key
CONTAINERS = {g: f"web-{g[-1]}" for g in GUESTS}
ADDRS = {g: f"10.60.{i + 1}.10" for i, g in enumerate(GUESTS)}
PAIRS = [(a, b) for a in GUESTS for b in GUESTS if a != b]


def mesh_yaml(loop_prevention=None):
    hosts = "\n".join(f"    - {{name: {g}, subnet: 10.60.{i + 1}.0/24}}"
                      for i, g in enumerate(GUESTS))
    extra = f"  loopPrevention: {loop_prevention}\n" if loop_prevention else ""
    docs = [f"""apiVersion: gremesh.io/v1alpha1
kind: GreMesh
metadata: {{name: {MESH}}}
spec:
  hosts:
{hosts}
  key: {KEY}
  network: 10.60.0.0/16
{extra}"""]
    for g in GUESTS:
        docs.append(f"""apiVersion: gremesh.io/v1alpha1
kind: ContainerAttachment
metadata: {{name: {CONTAINERS[g]}}}
spec: {{mesh: {MESH}, host: {g}, container: {CONTAINERS[g]}, address: {ADDRS[g]}}}
""")
    return "---\n".join(docs)


@pytest.fixture(scope="module")
def manifests(tmp_path_factory):
    d = tmp_path_factory.mktemp("gretap")
    (d / "mesh.yaml").write_text(mesh_yaml())
    (d / "mesh-stp.yaml").write_text(mesh_yaml("stp"))
    return d


@pytest.fixture(scope="module")
def mesh(vmlab, manifests):
    """Converges the mesh from empty: no gremesh device and fresh containers on every guest."""
    parallel(reset_guest, GUESTS)
    parallel(lambda g: start_container(g, CONTAINERS[g]), GUESTS)

    res, planned = plan(manifests / "mesh.yaml")
    t0 = time.monotonic()
    applied_res, report = apply(manifests / "mesh.yaml")
    converge = time.monotonic() - t0
    print(f"converge from empty: {converge:.1f}s")
    return {"plan": (res, planned), "report": report, "converge_seconds": converge,
            "stderr": applied_res.stderr}


def ping(src, dst_addr, *opts, count=1, check=True):
    return in_container(src, CONTAINERS[src], "ping", "-c", str(count), "-W", "3", *opts,
                        dst_addr, check=check)


def bridge_name(guest):
    return next(l["ifname"] for l in gremesh_links(guest)
                if l["ifalias"] == f"gremesh:{MESH}:bridge")


def tunnel(guest, peer):
    return next(l for l in links(guest) if l.get("ifalias") == f"gremesh:{MESH}:tunnel:{peer}")


# ---------------------------------------------------------------- converge


def test_probe_sees_gre_and_plans_steps(mesh):
    res, report = mesh["plan"]
    assert res.returncode == 0, res.stderr
    assert "no GRE support" not in res.stdout + res.stderr
    for g in GUESTS:
        h = host_report(report, g)
        assert h["capabilities"]["gretap"] is True, h
        assert any("type gretap" in s and f"key {KEY}" in s for s in h["planned"]), h["planned"]


def test_first_apply_converges_every_host(mesh):
    report = mesh["report"]
    for g in GUESTS:
        h = host_report(report, g)
        assert h["converged"], h
        assert h["issues"] == [], h["issues"]
        assert h["applied"] == len(h["planned"]) > 0
        assert [a["name"] for a in h["attachments"]] == [CONTAINERS[g]]
        m = next(m for m in h["meshes"] if m["mesh"] == MESH)
        assert (m["tunnelsExpected"], m["subnet"]) == (2, f"10.60.{GUESTS.index(g) + 1}.0/24")


def test_all_pairs_ping(mesh):
    def one(pair):
        src, dst = pair
        return pair, ping(src, ADDRS[dst], count=2, check=False)

    failed = [(p, r.stdout + r.stderr) for p, r in parallel(one, PAIRS) if r.returncode != 0]
    assert not failed, failed


def test_one_mtu_everywhere(mesh):
    for g in GUESTS:
        roles = {}
        for l in gremesh_links(g):
            role = l["ifalias"].split(":")[2]
            roles.setdefault(role, []).append((l["ifname"], l["mtu"]))
        assert set(roles) == {"bridge", "tunnel", "veth"}, roles
        assert len(roles["tunnel"]) == 2 and len(roles["veth"]) == 1
        assert all(mtu == MTU for devs in roles.values() for _, mtu in devs), roles
        eth1 = json.loads(in_container(g, CONTAINERS[g], "ip", "-j", "link", "show", "eth1").stdout)
        assert eth1[0]["mtu"] == MTU


def test_df_ping_fits_mtu_exactly(mesh):
    """MTU - 28 bytes of ICMP payload with DF set crosses a tunnel; one byte more does not."""
    src, dst = "vm-a", "vm-c"
    ok = ping(src, ADDRS[dst], "-M", "do", "-s", str(MTU - 28), check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert f"{MTU - 28 + 8} bytes from {ADDRS[dst]}" in ok.stdout
    big = ping(src, ADDRS[dst], "-M", "do", "-s", str(MTU - 27), check=False)
    assert big.returncode != 0
    assert "message too long" in big.stdout + big.stderr, big.stdout + big.stderr


def test_gre_key_read_back(mesh):
    for g in GUESTS:
        for peer in (p for p in GUESTS if p != g):
            data = tunnel(g, peer)["linkinfo"]["info_data"]
            assert (data["ikey"], data["okey"]) == ("0.0.0.7", "0.0.0.7"), (g, peer, data)
            assert (data["local"], data["remote"]) == (guest_ip(g), guest_ip(peer))


def test_second_apply_changes_nothing(mesh, manifests):
    _, report = apply(manifests / "mesh.yaml")
    for g in GUESTS:
        h = host_report(report, g)
        assert (h["planned"], h["applied"], h["converged"]) == ([], 0, True), h


def test_tcp_transfer_10mb(mesh):
    """10 MB over TCP from vm-b's container to vm-a's (busybox httpd and wget)."""
    server, client = "vm-b", "vm-a"
    sh(server, q("docker", "exec", CONTAINERS[server], "sh", "-c",
                 "mkdir -p /srv && dd if=/dev/urandom of=/srv/blob bs=1M count=10 2>/dev/null && "
                 "md5sum /srv/blob && httpd -p 8080 -h /srv"))
    want = sh(server, q("docker", "exec", CONTAINERS[server], "md5sum", "/srv/blob")).stdout.split()[0]
    t0 = time.monotonic()
    got = sh(client, q("docker", "exec", CONTAINERS[client], "sh", "-c",
                       f"wget -q -O - http://{ADDRS[server]}:8080/blob | md5sum"),
             timeout=180).stdout.split()[0]
    print(f"10 MB over the mesh in {time.monotonic() - t0:.1f}s")
    assert got == want


def test_broadcast_arrives_exactly_once(mesh):
    """An ARP broadcast from vm-a's container reaches the containers on vm-b and vm-c once per
    request: split horizon keeps a tunnel from forwarding another tunnel's frames."""
    unused, sent = "10.60.9.99", 3
    captures = {}
    for g in ("vm-b", "vm-c"):
        script = (f"pid=$(docker inspect --format '{{{{.State.Pid}}}}' {CONTAINERS[g]}) && "
                  f"exec nsenter -t \"$pid\" -n timeout 12 tcpdump -i eth1 -n -l "
                  f"'arp and host {unused}'")
        captures[g] = sh_bg(g, script)
    for g, p in captures.items():  # tcpdump says "listening on" once it captures
        seen = []
        while not seen or "listening on" not in seen[-1]:
            line = p.stderr.readline()
            assert line, (g, seen)
            seen.append(line)
    in_container("vm-a", CONTAINERS["vm-a"], "arping", "-c", str(sent), "-w", str(sent + 2),
                 "-I", "eth1", unused, check=False, timeout=30)
    for g, p in captures.items():
        out, _ = p.communicate(timeout=30)
        requests = [l for l in out.splitlines() if f"who-has {unused}" in l]
        assert len(requests) == sent, (g, out)


# ---------------------------------------------------------------- drift and failures


def test_s13_wrong_key_is_recreated(mesh, manifests):
    """S13: vm-b's tunnel to vm-a is replaced by one with key 99 that still carries gremesh's
    alias; the next apply sees the key as drift, recreates the tunnel and traffic flows."""
    g, peer = "vm-b", "vm-a"
    t = tunnel(g, peer)
    name, alias, br = t["ifname"], t["ifalias"], bridge_name(g)
    sh(g, f"ip link del dev {name} && "
          f"ip link add name {name} mtu {MTU} type gretap local {guest_ip(g)} "
          f"remote {guest_ip(peer)} key 99 ttl 64 && "
          f"ip link set dev {name} alias {q(alias)} master {br} up && "
          f"bridge link set dev {name} isolated on")
    assert tunnel(g, peer)["linkinfo"]["info_data"]["ikey"] == "0.0.0.99"
    assert ping(peer, ADDRS[g], check=False).returncode != 0  # keys differ: nothing arrives

    _, drift = plan(manifests / "mesh.yaml")
    h = host_report(drift, g)
    print("plan for the drifted tunnel:\n  " + "\n  ".join(h["planned"]))
    m = next(m for m in h["meshes"] if m["mesh"] == MESH)
    assert m["tunnelsUp"] == 1, m  # the wrong-key tunnel does not count as up
    assert any(name in s and "key 7" in s for s in h["planned"]), h["planned"]
    for other in ("vm-a", "vm-c"):
        assert host_report(drift, other)["planned"] == []

    _, report = apply(manifests / "mesh.yaml")
    h = host_report(report, g)
    print("applied:\n  " + "\n  ".join(h["planned"]))
    assert h["converged"] and h["applied"] == len(h["planned"]) > 0
    data = tunnel(g, peer)["linkinfo"]["info_data"]
    assert (data["ikey"], data["okey"]) == ("0.0.0.7", "0.0.0.7")
    assert ping(peer, ADDRS[g], count=2, check=False).returncode == 0
    assert ping(g, ADDRS[peer], count=2, check=False).returncode == 0


NFT_BLOCK = """table inet gmvmtest {{
  chain input {{ type filter hook input priority 0; ip saddr {peer} ip protocol gre drop; }}
  chain output {{ type filter hook output priority 0; ip daddr {peer} ip protocol gre drop; }}
}}"""


def test_s14_blocked_gre_marks_exactly_that_pair(mesh, manifests):
    """S14: vm-b drops IP protocol 47 to and from vm-a. gremesh still creates the devices;
    its report names the pair (vm-a, vm-b) as not answering and every other pair as up."""
    blocked, peer = "vm-b", "vm-a"
    try:
        # vm-b loses its mesh devices, then the firewall goes up before gremesh recreates them
        for n in sorted((l["ifname"] for l in gremesh_links(blocked)), key=lambda n: n.startswith("gm-")):
            sh(blocked, f"ip link del dev {n}")
        sh(blocked, "nft -f - <<'EOF'\n" + NFT_BLOCK.format(peer=guest_ip(peer)) + "\nEOF")
        res, first = apply(manifests / "mesh.yaml")
        h = host_report(first, blocked)
        assert h["applied"] > 0 and h["converged"], h
        assert len([l for l in gremesh_links(blocked) if ":tunnel:" in l["ifalias"]]) == 2
        print("human summary:\n" + res.stderr[-2000:])

        # hosts apply in parallel; the second pass sees every device in place on every host
        res, report = apply(manifests / "mesh.yaml")
        print(json.dumps([{"host": h["host"], "meshes": h["meshes"]} for h in report["hosts"]],
                         indent=1))
        summary = res.stderr + res.stdout
        meshes = {g: next(m for m in host_report(report, g)["meshes"] if m["mesh"] == MESH)
                  for g in GUESTS}
        want_up = {"vm-a": ["vm-c"], "vm-b": ["vm-c"], "vm-c": ["vm-a", "vm-b"]}
        assert {g: sorted(m["peersUp"]) for g, m in meshes.items()} == want_up, (meshes, summary)
        assert {g: sorted(m.get("peersUnanswered", [])) for g, m in meshes.items()} == {
            "vm-a": ["vm-b"], "vm-b": ["vm-a"], "vm-c": []}, meshes
        # the human summary names the pair too
        text = gremesh("apply", "-f", str(HOSTS_YAML), "-f", str(manifests / "mesh.yaml"))
        warn = [l for l in text.stdout.splitlines() if "no answer across the tunnel" in l]
        assert len(warn) == 2 and "to vm-b" in warn[0] + warn[1] and "to vm-a" in warn[0] + warn[1], \
            text.stdout + text.stderr
        # traffic confirms it: the blocked pair is cut, the others are not
        assert ping("vm-a", ADDRS["vm-b"], check=False).returncode != 0
        assert ping("vm-a", ADDRS["vm-c"], check=False).returncode == 0
        assert ping("vm-b", ADDRS["vm-c"], check=False).returncode == 0
    finally:
        sh(blocked, "nft delete table inet gmvmtest 2>/dev/null; true")
    _, report = apply(manifests / "mesh.yaml")  # nothing to change: every host probes at once
    for g in GUESTS:
        m = next(m for m in host_report(report, g)["meshes"] if m["mesh"] == MESH)
        assert sorted(m.get("peersUp", [])) == sorted(p for p in GUESTS if p != g), m


# ---------------------------------------------------------------- loop prevention: STP


def test_stp_variant_converges_and_forwards(mesh, manifests):
    """loopPrevention: stp on the same mesh: bridges run STP (stp_state 1) and, once the
    ports have settled, the containers reach each other again."""
    _, report = apply(manifests / "mesh-stp.yaml")
    for g in GUESTS:
        assert host_report(report, g)["converged"], host_report(report, g)
        br = json.loads(sh(g, f"ip -d -j link show dev {bridge_name(g)}").stdout)[0]
        assert br["linkinfo"]["info_data"]["stp_state"] == 1, br["linkinfo"]
    t0 = time.monotonic()
    pending = list(PAIRS)
    while pending and time.monotonic() - t0 < 90:
        results = parallel(lambda p: (p, ping(p[0], ADDRS[p[1]], check=False)), pending)
        pending = [p for p, r in results if r.returncode != 0]
        if pending:
            time.sleep(2)
    print(f"STP: every pair pings {time.monotonic() - t0:.0f}s after apply")
    assert not pending, pending
    _, again = apply(manifests / "mesh-stp.yaml")
    assert all(host_report(again, g)["planned"] == [] for g in GUESTS)
