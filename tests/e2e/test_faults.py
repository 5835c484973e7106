"""Faults (issue 7): interrupted passes, sshd going away, a slow and lossy host, churn. Each
test asserts the outcome a user relies on: nothing half-made or leaked, the affected host named
precisely, everything healing when the fault ends."""

import asyncio
import glob
import json
import random
import signal
import subprocess
import threading
import time

from conftest import (BIN, HOSTS, HOSTS_YAML, STATE, accepted_logins, apply, attachment_yaml,
                      clean_hosts, gremesh, gremesh_links, in_container, lab, mesh_yaml, on_host,
                      wait_for, write)

ADDRS = {"host-a": "10.10.1.10", "host-b": "10.10.2.10", "host-c": "10.10.3.10"}


def manifest(tmp_path):
    text = mesh_yaml()
    for host, addr in ADDRS.items():
        text += attachment_yaml("web-" + host[-1], host, "web-" + host[-1], addr)
    return write(tmp_path, "mesh.yaml", text)


def owned():
    """Every gremesh device on every host, and every container's extra interfaces."""
    devices = {h: sorted((l["ifname"], l["ifalias"]) for l in gremesh_links(h)) for h in HOSTS}
    inner = {}
    for h in HOSTS:
        links = json.loads(in_container(h, "web-" + h[-1], "ip", "-j", "addr").stdout)
        inner[h] = sorted((l["ifname"], tuple(a["local"] for a in l.get("addr_info", []) if a["family"] == "inet"))
                          for l in links if l["ifname"] != "lo")
    return devices, inner


def test_killed_passes_leave_nothing_half_made(fresh, tmp_path):
    """SIGKILL at random points of many passes; the next pass completes the spec and the set
    of gremesh devices equals exactly what the spec needs: no leaks, no duplicates."""
    m = manifest(tmp_path)
    apply(m)
    expected = owned()
    rng = random.Random(7)
    kills = 0
    for _ in range(12):
        if rng.random() < 0.6:  # start from scratch so the kill lands in real work
            for h in HOSTS:
                for link in gremesh_links(h):
                    on_host(h, "ip", "link", "del", link["ifname"], check=False)
        proc = subprocess.Popen([str(BIN), "apply", "-f", str(HOSTS_YAML), "-f", str(m)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.05, 1.5))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
    assert kills >= 6
    time.sleep(2)  # let remote scripts of killed passes finish
    res, report = apply(m)
    assert report["meshes"][0]["ready"], res.stdout
    assert owned() == expected
    _, again = apply(m)
    assert all(h["planned"] == [] for h in again["hosts"])
    # Key files of killed runs are swept by the next run (the apply above).
    leftovers = [p for p in glob.glob("/tmp/gremesh-ssh-*/id") if not alive_owner(p)]
    assert leftovers == []


def alive_owner(path):
    """Whether the gremesh process that wrote a key file (its PID is in the folder name) runs."""
    pid = path.split("gremesh-ssh-")[1].split("-")[0]
    return pid.isdigit() and __import__("os").path.exists(f"/proc/{pid}")


def sshd_pid(host):
    return (STATE / host / "sshd.pid").read_text().strip()


def sshd_processes(host):
    """host-b's sshd listener and every process under it (the sessions of open connections)."""
    pids, todo = [], [sshd_pid(host)]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        children = subprocess.run(["pgrep", "-P", pid], capture_output=True, text=True).stdout
        todo += children.split()
    return pids


def test_sshd_stopping_mid_pass_names_the_host_and_heals(fresh, tmp_path):
    """sshd on host-b dies (listener and open sessions) while a pass is using it: only host-b
    is reported, the others converge, and once sshd is back the mesh is Ready."""
    m = manifest(tmp_path)
    hit = None
    for _ in range(3):  # the kill must land after host-b's login and before its pass ends
        logins = accepted_logins("host-b")
        proc = subprocess.Popen([str(BIN), "apply", "-o", "json", "-f", str(HOSTS_YAML), "-f",
                                 str(m), "--connect-timeout", "3s"], stdout=subprocess.PIPE, text=True)
        try:
            assert wait_for(lambda: accepted_logins("host-b") > logins, timeout=20, interval=0.02)
            subprocess.run(["kill", "-9", *sshd_processes("host-b")], check=False)
            out, _ = proc.communicate(timeout=120)
        finally:
            lab("reload-sshd", "host-b")
        report = json.loads(out)
        b = next(h for h in report["hosts"] if h["host"] == "host-b")
        others = [h for h in report["hosts"] if h["host"] != "host-b"]
        assert all(h.get("error") is None and h["converged"] for h in others), others
        if b.get("error"):
            hit = b
            break
        clean_hosts()
    assert hit is not None, "the kill never landed mid-pass"
    assert "host-b" not in json.dumps([h.get("error") for h in others])
    _, report = apply(m)
    assert report["meshes"][0]["ready"]
    _, again = apply(m)
    assert all(h["planned"] == [] for h in again["hosts"])


async def relay(listen_port, target, delay, stop):
    """A TCP relay on 10.200.0.1 adding `delay` seconds to every chunk in each direction."""
    async def pipe(reader, writer):
        try:
            while data := await reader.read(65536):
                await asyncio.sleep(delay)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def handle(client_r, client_w):
        server_r, server_w = await asyncio.open_connection(*target)
        await asyncio.gather(pipe(client_r, server_w), pipe(server_r, client_w))

    server = await asyncio.start_server(handle, "10.200.0.1", listen_port)
    async with server:
        while not stop.is_set():
            await asyncio.sleep(0.1)


def test_slow_lossy_host_converges_and_others_are_on_time(fresh, tmp_path):
    """300 ms of SSH latency (a relay) and 5 % packet loss (iptables statistic) on host-b."""
    stop = threading.Event()
    thread = threading.Thread(target=lambda: asyncio.run(relay(2212, ("10.200.0.12", 22), 0.15, stop)))
    thread.start()
    loss = ["INPUT", "-p", "tcp", "--dport", "22", "-m", "statistic", "--mode", "random",
            "--probability", "0.05", "-j", "DROP"]
    on_host("host-b", "iptables", "-A", *loss)
    try:
        docs = HOSTS_YAML.read_text().split("---")
        docs = [d.replace("address: 10.200.0.12", "address: 10.200.0.1").replace("port: 22\n", "port: 2212\n")
                if "name: host-b" in d else d for d in docs]
        hosts = write(tmp_path, "hosts.yaml", "---".join(docs))
        m = manifest(tmp_path)
        res = gremesh("apply", "-o", "json", "-f", str(hosts), "-f", str(m))
        report = json.loads(res.stdout)
        assert res.returncode == 0 and report["meshes"][0]["ready"], res.stdout
        dur = {h["host"]: h["duration"] for h in report["hosts"]}
        assert dur["host-b"] > 600, dur  # at least two delayed round trips
        again = json.loads(gremesh("apply", "-o", "json", "-f", str(hosts), "-f", str(m)).stdout)
        assert all(h["planned"] == [] for h in again["hosts"])
    finally:
        on_host("host-b", "iptables", "-D", *loss, check=False)
        stop.set()
        thread.join(timeout=10)


def test_churn_of_100_edits_ends_in_the_last_spec(running, tmp_path):
    """100 rapid edits of a mesh (hosts added and removed, MTU and key changed) through the
    operator: the hosts end in the last spec's state with no leaked device."""
    c = running
    rng = random.Random(11)
    final = None
    for i in range(100):
        hosts = sorted(rng.sample(HOSTS, rng.randint(1, 3)))
        members = "".join(f"    - name: {h}\n      subnet: 10.70.{HOSTS.index(h) + 1}.0/24\n" for h in hosts)
        final = (f"apiVersion: gremesh.io/v1alpha1\nkind: GreMesh\nmetadata:\n  name: churn\nspec:\n  hosts:\n{members}"
                 f"  encapsulation: vxlan\n  key: {rng.randint(100, 120)}\n  network: 10.70.0.0/16\n"
                 f"  mtu: {rng.choice([1300, 1350, 1400, 1450])}\n")
        c.kubectl("apply", "-f", "-", stdin=final)
    c.wait_observed("churn", timeout=120)
    spec = write(tmp_path, "final.yaml", final)
    res = gremesh("plan", "-o", "json", "-f", str(HOSTS_YAML), "-f", str(spec))
    report = json.loads(res.stdout)
    assert all(h["planned"] == [] for h in report["hosts"]), report
    members = {line.split()[-1] for line in final.splitlines() if line.strip().startswith("- name:")}
    for h in HOSTS:
        churn = [l for l in gremesh_links(h) if l["ifalias"].startswith("gremesh:churn:")]
        if h in members:
            assert len(churn) == 2, churn  # bridge + VXLAN device, nothing else
        else:
            assert churn == [], (h, churn)
    c.kubectl("delete", "gremesh", "churn", "--timeout=60s")
