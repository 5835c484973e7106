"""Operator end-to-end: attachments that follow their containers (issue 4; S03, S04, S06)."""

import json
import subprocess
import time

from conftest import (HOSTS, attach_doc, gremesh_links, in_container, lab, mesh_doc, on_host,
                      ping, wait_for)


def eth1(host, container):
    res = in_container(host, container, "ip", "-j", "-d", "addr", "show", "eth1", check=False)
    if res.returncode != 0:
        return None
    link = json.loads(res.stdout)[0]
    addrs = [f'{a["local"]}/{a["prefixlen"]}' for a in link.get("addr_info", []) if a["family"] == "inet"]
    return {"addrs": addrs, "mac": link["address"], "mtu": link["mtu"]}


def veths_for(host, attachment):
    return [l["ifname"] for l in gremesh_links(host) if l.get("ifalias", "").endswith(f":veth:{attachment}")]


def mesh_ab(c, extra=""):
    c.kubectl("apply", "-f", "-", stdin=mesh_doc(["host-a", "host-b"]) + attach_doc("host-a") + attach_doc("host-b") + extra)
    c.wait_ready("gremesh", "om")
    c.wait_ready("containerattachment", "om-host-a")
    c.wait_ready("containerattachment", "om-host-b")


def test_stop_start_reattaches_with_same_address_mac_mtu(running):
    """S03 and S04: a new network namespace after `docker stop/start`, found anew from Docker."""
    c = running
    mesh_ab(c)
    before = eth1("host-a", "web-a")
    pid_before = on_host("host-a", "docker", "inspect", "-f", "{{.State.Pid}}", "web-a").stdout
    on_host("host-a", "docker", "stop", "web-a")
    on_host("host-a", "docker", "start", "web-a")
    assert wait_for(lambda: eth1("host-a", "web-a") == before, timeout=15), eth1("host-a", "web-a")
    assert on_host("host-a", "docker", "inspect", "-f", "{{.State.Pid}}", "web-a").stdout != pid_before
    assert wait_for(lambda: ping("host-a", "host-b"), timeout=10)
    assert len(veths_for("host-a", "om-host-a")) == 1
    bridge_ports = json.loads(on_host("host-a", "bridge", "-j", "link", "show").stdout)
    ours = [p for p in bridge_ports if p["ifname"] in veths_for("host-a", "om-host-a")]
    assert len(ours) == 1
    # Nothing ever lands in the host's own namespace by mistake.
    names = {l["ifname"] for l in json.loads(on_host("host-a", "ip", "-j", "link").stdout)}
    assert "eth1" not in names and not any(n.startswith("gc-") for n in names)


def test_stopped_container_is_reported_and_its_veth_removed(running):
    c = running
    mesh_ab(c)
    on_host("host-a", "docker", "stop", "web-a")

    def not_running():
        st = c.get("containerattachment", "om-host-a").get("status", {})
        return any(x["reason"] == "ContainerNotRunning" for x in st.get("conditions", []))
    assert wait_for(not_running, timeout=15)
    assert veths_for("host-a", "om-host-a") == []
    on_host("host-a", "docker", "start", "web-a")
    c.wait_ready("containerattachment", "om-host-a")


def test_removed_and_recreated_container_is_attached_again(running):
    c = running
    mesh_ab(c)
    old_id = c.get("containerattachment", "om-host-a")["status"]["containerId"]
    lab("run", "host-a", "web-a")  # docker rm -f + docker run under the same name

    def new_container():
        st = c.get("containerattachment", "om-host-a").get("status", {})
        return st.get("containerId") not in (None, old_id) and any(
            x["type"] == "Ready" and x["status"] == "True" for x in st.get("conditions", []))
    assert wait_for(new_container, timeout=20)
    assert wait_for(lambda: ping("host-a", "host-b"), timeout=10)
    missing = on_host("host-b", "docker", "rm", "-f", "web-b")
    assert missing.returncode == 0

    def gone():
        st = c.get("containerattachment", "om-host-b").get("status", {})
        return any(x["reason"] == "ContainerMissing" for x in st.get("conditions", []))
    assert wait_for(gone, timeout=15)


def test_docker_daemon_restart_reattaches(running):
    c = running
    lab("run", "host-a", "web-a", "--restart", "always")
    mesh_ab(c)
    pid = (STATE_DIR() / "host-a" / "dockerd.pid").read_text().strip()
    subprocess.run(["kill", pid], check=True)
    assert wait_for(lambda: subprocess.run(["kill", "-0", pid], capture_output=True).returncode != 0, timeout=30)
    lab("up", "3")  # starts the missing daemon; web-a comes back by its restart policy
    assert wait_for(lambda: eth1("host-a", "web-a") is not None, timeout=40)
    assert wait_for(lambda: ping("host-a", "host-b"), timeout=10)


def STATE_DIR():
    from conftest import STATE
    return STATE


def test_detach_keeps_container_and_its_routes(running):
    """S06: a container with its own network (eth0 + default route) attached, then detached."""
    c = running
    on_host("host-a", "docker", "network", "create", "--subnet", "172.30.0.0/24", "lan", check=False)
    on_host("host-a", "docker", "rm", "-f", "web-a")
    on_host("host-a", "docker", "run", "-d", "--name", "web-a", "--network", "lan", "--stop-signal", "KILL",
            "gremesh-lab/busybox:latest", "sleep", "1000000")
    routes_before = in_container("host-a", "web-a", "ip", "-j", "route").stdout
    mesh_ab(c)
    assert eth1("host-a", "web-a") is not None
    c.kubectl("delete", "containerattachment", "om-host-a", "--timeout=60s")
    assert eth1("host-a", "web-a") is None
    assert veths_for("host-a", "om-host-a") == []
    assert "true" in on_host("host-a", "docker", "inspect", "-f", "{{.State.Running}}", "web-a").stdout
    assert in_container("host-a", "web-a", "ip", "-j", "route").stdout == routes_before
    lab("run", "host-a", "web-a")
    on_host("host-a", "docker", "network", "rm", "lan", check=False)


def test_allocated_address_is_stable_and_conflicts_are_reported(running):
    c = running
    auto = ("---\napiVersion: gremesh.io/v1alpha1\nkind: ContainerAttachment\nmetadata:\n  name: auto-c\n"
            "spec:\n  mesh: om\n  host: host-c\n  container: web-c\n")
    c.kubectl("apply", "-f", "-", stdin=mesh_doc(HOSTS) + attach_doc("host-a") + auto)
    c.wait_ready("containerattachment", "auto-c")
    st = c.get("containerattachment", "auto-c")["status"]
    assert st["address"] == "10.30.3.2", st  # lowest free after the gateway .1

    # A later attachment taking web-a's address gets Conflict naming the first; nothing runs
    # for it and web-a keeps working.
    lab("run", "host-a", "app-a")
    clash = ("---\napiVersion: gremesh.io/v1alpha1\nkind: ContainerAttachment\nmetadata:\n  name: clash\n"
             "spec:\n  mesh: om\n  host: host-a\n  container: app-a\n  address: 10.30.1.10\n")
    time.sleep(1.1)  # a later creationTimestamp (second resolution)
    c.kubectl("apply", "-f", "-", stdin=clash)

    def conflict():
        s = c.get("containerattachment", "clash").get("status", {})
        return any(x["reason"] == "Conflict" and "om-host-a" in x["message"] for x in s.get("conditions", []))
    assert wait_for(conflict, timeout=15)
    assert eth1("host-a", "app-a") is None
    assert on_host("host-a", "docker", "exec", "web-a", "ping", "-c", "1", "-W", "2", "10.30.3.2",
                   check=False).returncode == 0
    c.kubectl("delete", "containerattachment", "clash", "--timeout=60s")
    on_host("host-a", "docker", "rm", "-f", "app-a", check=False)

    # The allocation survives an operator restart (it is read back from status).
    c.stop_operators()
    c.start_operator()
    time.sleep(5)
    assert c.get("containerattachment", "auto-c")["status"]["address"] == "10.30.3.2"
    assert eth1("host-c", "web-c")["addrs"] == ["10.30.3.2/16"]


def network_ip(host, name):
    return on_host(host, "docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                   name).stdout.strip()


def test_docker_network_over_the_mesh(running):
    """`docker run --network NAME` on two hosts: the containers reach each other directly;
    deleting the mesh waits (with the reason) while containers are still connected."""
    c = running
    c.kubectl("apply", "-f", "-", stdin=mesh_doc(HOSTS) + "  dockerNetwork:\n    name: omnet\n")
    c.wait_ready("gremesh", "om")
    for h in ("a", "b"):
        on_host(f"host-{h}", "docker", "rm", "-f", f"dn-{h}", check=False)
        on_host(f"host-{h}", "docker", "run", "-d", "--name", f"dn-{h}", "--network", "omnet",
                "--stop-signal", "KILL", "gremesh-lab/busybox:latest", "sleep", "1000000")
    ip_b = network_ip("host-b", "dn-b")
    assert ip_b.startswith("10.30.2.") and int(ip_b.split(".")[3]) >= 128, ip_b
    assert on_host("host-a", "docker", "exec", "dn-a", "ping", "-c", "2", "-W", "2", ip_b).returncode == 0
    mtu = json.loads(on_host("host-b", "docker", "exec", "dn-b", "cat", "/sys/class/net/eth0/mtu").stdout)
    assert mtu == 1450

    c.kubectl("delete", "gremesh", "om", "--wait=false")
    time.sleep(6)
    assert c.kubectl("get", "gremesh", "om", check=False).returncode == 0
    events = c.kubectl("get", "events", "-o", "json").stdout
    assert "CleanupBlocked" in events and "omnet" in events and "container" in events
    for h in ("a", "b"):
        on_host(f"host-{h}", "docker", "rm", "-f", f"dn-{h}")
    assert wait_for(lambda: c.kubectl("get", "gremesh", "om", check=False).returncode != 0, timeout=60)
    for h in HOSTS:
        assert "omnet" not in on_host(h, "docker", "network", "ls", "--format", "{{.Name}}").stdout
        assert gremesh_links(h) == []
