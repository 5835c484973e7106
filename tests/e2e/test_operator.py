"""Operator end-to-end: the real `gremesh operator` binary against a Kubernetes API, driven
only with kubectl, converging the lab hosts (fixtures in conftest.py: `cluster`, `running`).
"""

import json
import signal
import subprocess
import time
import urllib.request

from conftest import (HOSTS, HOSTS_YAML, LAB, METRICS, NAMESPACE, STATE, accepted_logins, attach_doc,
                      gremesh_links, lab, mesh_doc, on_host, ping, wait_for)


def test_apply_wait_ping_edit_and_delete(running, tmp_path):
    c = running
    c.kubectl("apply", "-f", "-", stdin=mesh_doc(["host-a", "host-b"]) + attach_doc("host-a") + attach_doc("host-b"))
    c.wait_ready("gremesh", "om")
    c.wait_ready("containerattachment", "om-host-a")
    assert wait_for(lambda: ping("host-a", "host-b"), timeout=10)
    m = c.get("gremesh", "om")
    assert m["status"]["mtu"] == 1450 and m["status"]["hostsReady"] == "2/2", m["status"]
    assert m["metadata"]["finalizers"] == ["gremesh.io/cleanup"]
    att = c.get("containerattachment", "om-host-a")
    assert att["status"]["address"] == "10.30.1.10" and len(att["status"]["containerId"]) == 64

    # Add a host: it converges, and the others get a tunnel to it.
    c.kubectl("apply", "-f", "-", stdin=mesh_doc(HOSTS) + attach_doc("host-c"))
    c.wait_observed("om")
    assert wait_for(lambda: ping("host-a", "host-c") and ping("host-c", "host-b"), timeout=15)

    # Change the MTU: every gremesh device on every host follows.
    c.kubectl("apply", "-f", "-", stdin=mesh_doc(HOSTS, mtu=1400))
    c.wait_observed("om")
    assert all({l["mtu"] for l in gremesh_links(h)} == {1400} for h in HOSTS)

    # Remove a host: its devices go, and the others drop their tunnels to it.
    c.kubectl("delete", "containerattachment", "om-host-c", "--timeout=60s")
    c.kubectl("apply", "-f", "-", stdin=mesh_doc(["host-a", "host-b"], mtu=1400))
    c.wait_observed("om")
    assert wait_for(lambda: gremesh_links("host-c") == [], timeout=20)
    fdb = json.loads(on_host("host-a", "bridge", "-j", "fdb", "show").stdout)
    floods = {e.get("dst") for e in fdb if e["mac"] == "00:00:00:00:00:00"}
    assert floods == {"10.200.0.12"}, floods

    # Delete: every host is clean, containers keep running.
    c.kubectl("delete", "containerattachments", "--all", "--timeout=60s")
    c.kubectl("delete", "gremesh", "om", "--timeout=60s")
    assert all(gremesh_links(h) == [] for h in HOSTS)
    assert "true" in on_host("host-a", "docker", "inspect", "-f", "{{.State.Running}}", "web-a").stdout
    events = c.kubectl("get", "events", "-o", "json").stdout
    assert "Applied" in events


def test_converged_mesh_is_not_rewritten_on_resync(running):
    c = running
    c.kubectl("apply", "-f", "-", stdin=mesh_doc(["host-a", "host-b"]) + attach_doc("host-a"))
    c.wait_ready("gremesh", "om")
    time.sleep(2)
    objects = (("gremesh", "om"), ("containerattachment", "om-host-a"), ("dockerhost", "host-a"))
    before = {k: c.get(k, n)["metadata"]["resourceVersion"] for k, n in objects}
    time.sleep(8)  # more than two resync periods
    after = {k: c.get(k, n)["metadata"]["resourceVersion"] for k, n in objects}
    assert before == after
    metrics = urllib.request.urlopen(f"http://{METRICS}/metrics", timeout=5).read().decode()
    assert 'gremesh_passes_total{result="converged"}' in metrics
    assert urllib.request.urlopen(f"http://{METRICS}/readyz", timeout=5).status == 200


def test_drift_is_healed_by_resync(running):
    c = running
    c.kubectl("apply", "-f", "-", stdin=mesh_doc(["host-a", "host-b"]) + attach_doc("host-a") + attach_doc("host-b"))
    c.wait_ready("gremesh", "om")
    vx = next(l["ifname"] for l in gremesh_links("host-b") if l["linkinfo"]["info_kind"] == "vxlan")
    on_host("host-b", "ip", "link", "del", vx)
    assert wait_for(lambda: any(l["ifname"] == vx for l in gremesh_links("host-b")), timeout=20)
    assert wait_for(lambda: ping("host-a", "host-b"), timeout=10)


def test_host_reboot_is_rebuilt_and_others_get_no_change(running):
    """S05."""
    c = running
    c.kubectl("apply", "-f", "-", stdin=mesh_doc(HOSTS) + "".join(attach_doc(h) for h in HOSTS))
    c.wait_ready("gremesh", "om")
    time.sleep(3)
    monitors = {h: subprocess.Popen([str(LAB), "sh", h, "ip", "-o", "monitor", "link", "address"],
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
                for h in ("host-a", "host-c")}
    time.sleep(0.5)
    lab("restart-host", "host-b")
    lab("run", "host-b", "web-b")
    assert wait_for(lambda: ping("host-a", "host-b") and ping("host-b", "host-c"), timeout=40)
    for p in monitors.values():
        p.terminate()
    events = {h: p.communicate(timeout=10)[0] for h, p in monitors.items()}
    assert events == {"host-a": "", "host-c": ""}, events


def test_operator_restart_changes_nothing(running):
    """S07: a new operator process with empty caches against converged hosts."""
    c = running
    c.kubectl("apply", "-f", "-", stdin=mesh_doc(["host-a", "host-b"]) + attach_doc("host-a") + attach_doc("host-b"))
    c.wait_ready("gremesh", "om")
    time.sleep(3)

    # Without traffic: no link, address or neighbour event on any host across a restart and
    # two resyncs of the new process.
    monitors = [subprocess.Popen([str(LAB), "sh", h, "ip", "-o", "monitor", "link", "address", "neigh"],
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
                for h in ("host-a", "host-b")]
    time.sleep(0.5)
    c.stop_operators()
    c.start_operator()
    time.sleep(8)
    for p in monitors:
        p.terminate()
    # Neighbour entries of the underlay move between REACHABLE/STALE/PROBE/DELAY by themselves
    # (kernel housekeeping of traffic between the hosts); any other event is a change.
    housekeeping = (" REACHABLE", " STALE", " PROBE", " DELAY")
    changes = [line for p in monitors for line in p.communicate(timeout=10)[0].splitlines()
               if not (" lladdr " in line and line.rstrip().endswith(tuple(h.strip() for h in housekeeping))
                       and not line.startswith("Deleted"))]
    assert changes == [], changes

    # With traffic: no ping lost across another restart.
    pinger = subprocess.Popen([str(LAB), "sh", "host-a", "docker", "exec", "web-a", "ping", "-c", "40",
                               "-i", "0.25", "10.30.2.10"], stdout=subprocess.PIPE, text=True)
    time.sleep(1)
    c.stop_operators()
    c.start_operator()
    out = pinger.communicate(timeout=30)[0]
    assert " 0% packet loss" in out, out


def test_changed_host_key_stops_that_host_only(running, tmp_path):
    """S10."""
    c = running
    c.kubectl("apply", "-f", "-", stdin=mesh_doc(["host-a", "host-b"]))
    c.wait_ready("gremesh", "om")
    key = STATE / "host-b" / "ssh_host_ed25519_key"
    saved = key.read_bytes(), key.with_suffix(".pub").read_bytes()
    try:
        key.unlink()
        key.with_suffix(".pub").unlink()
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        lab("reload-sshd", "host-b")
        new_fp = subprocess.run(["ssh-keygen", "-lf", str(key.with_suffix(".pub"))], capture_output=True,
                                text=True).stdout.split()[1]
        logins = accepted_logins("host-b")

        def mismatch():
            st = c.get("dockerhost", "host-b").get("status", {})
            return any(x.get("reason") == "HostKeyMismatch" for x in st.get("conditions", []))
        assert wait_for(mismatch, timeout=30)
        st = c.get("dockerhost", "host-b")["status"]
        assert new_fp in st["message"], st
        assert accepted_logins("host-b") == logins
        assert c.get("dockerhost", "host-a")["status"]["reachable"] is True
        mesh = c.get("gremesh", "om")["status"]
        degraded = next(x for x in mesh["conditions"] if x["type"] == "Degraded")
        assert degraded["status"] == "True" and "host-b" in degraded["message"]

        # Pinning the new key brings the host back.
        pub = key.with_suffix(".pub").read_text().split()
        c.kubectl("patch", "dockerhost", "host-b", "--type=merge", "-p",
                  json.dumps({"spec": {"hostKey": f"{pub[0]} {pub[1]}"}}))
        c.wait_ready("gremesh", "om")
    finally:
        key.write_bytes(saved[0])
        key.with_suffix(".pub").write_bytes(saved[1])
        lab("reload-sshd", "host-b")
        c.kubectl("apply", "-f", str(HOSTS_YAML))


def test_unreachable_host_blocks_deletion_until_abandoned(running):
    c = running
    c.kubectl("apply", "-f", "-", stdin=mesh_doc(HOSTS))
    c.wait_ready("gremesh", "om")
    subprocess.run(["ip", "link", "set", "gmlab-c", "down"], check=True)
    try:
        c.kubectl("delete", "gremesh", "om", "--wait=false")
        time.sleep(6)
        m = c.get("gremesh", "om")
        assert m["metadata"].get("deletionTimestamp"), m
        assert gremesh_links("host-a") == [] and gremesh_links("host-b") == []
        c.kubectl("annotate", "dockerhost", "host-c", "gremesh.io/abandon=true")
        assert wait_for(lambda: c.kubectl("get", "gremesh", "om", check=False).returncode != 0, timeout=60)
    finally:
        subprocess.run(["ip", "link", "set", "gmlab-c", "up"], check=True)
        c.kubectl("annotate", "dockerhost", "host-c", "gremesh.io/abandon-", check=False)
        for l in gremesh_links("host-c"):
            on_host("host-c", "ip", "link", "del", l["ifname"], check=False)


def test_two_replicas_one_leader(cluster, fresh):
    c = cluster
    first = c.start_operator("--leader-election", "--identity", "one", "--lease-namespace", NAMESPACE,
                             "--listen", "127.0.0.1:18081", name="one")
    time.sleep(2)
    c.start_operator("--leader-election", "--identity", "two", "--lease-namespace", NAMESPACE,
                              "--listen", "127.0.0.1:18082", name="two")
    try:
        def holder():
            res = c.kubectl("get", "lease", "gremesh-operator", "-o", "json", check=False)
            return json.loads(res.stdout)["spec"].get("holderIdentity") if res.returncode == 0 else None
        assert wait_for(lambda: holder() == "one", timeout=15)
        time.sleep(3)
        assert holder() == "one"
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=15)
        assert wait_for(lambda: holder() == "two", timeout=30)
    finally:
        c.stop_operators()
