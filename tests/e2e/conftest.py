"""Fixtures for the lab end-to-end suite: the lab itself, the gremesh binary, and helpers to
run commands on lab hosts and inside their containers.

The suite needs root and drives `tests/lab/lab.sh`; `tests/run` brings the lab up first.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAB = ROOT / "tests" / "lab" / "lab.sh"
STATE = Path(os.environ.get("GREMESH_LAB_STATE", "/run/gremesh-lab"))
HOSTS_YAML = STATE / "hosts.yaml"
BIN = Path(os.environ.get("GREMESH_BIN", ROOT / "target" / "debug" / "gremesh"))
HOSTS = ["host-a", "host-b", "host-c"]


def run(cmd, check=True, timeout=120, **kw):
    """Runs a command, returning CompletedProcess with text output."""
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if check and res.returncode != 0:
        raise AssertionError(f"{cmd} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    return res


def lab(*args, check=True, timeout=300):
    return run([str(LAB), *args], check=check, timeout=timeout)


def on_host(host, *cmd, check=True, timeout=60):
    """Runs a command in a lab host's network namespace (with its DOCKER_HOST)."""
    return lab("sh", host, *cmd, check=check, timeout=timeout)


def container_pid(host, name):
    return on_host(host, "docker", "inspect", "--format", "{{.State.Pid}}", name).stdout.strip()


def in_container(host, name, *cmd, check=True, timeout=60):
    """Runs a machine binary inside a container's network namespace (iputils ping, tcpdump)."""
    pid = container_pid(host, name)
    return run(["nsenter", "-t", pid, "-n", *cmd], check=check, timeout=timeout)


def docker_exec(host, name, *cmd, check=True, timeout=120):
    """Runs a command inside the container with its own (busybox) tools."""
    return on_host(host, "docker", "exec", name, *cmd, check=check, timeout=timeout)


def gremesh(*args, check=False, timeout=180):
    return run([str(BIN), *args], check=check, timeout=timeout)


def apply(*files, extra=(), check=True):
    """`gremesh apply` with the lab hosts plus the given manifests; returns the JSON report."""
    args = ["apply", "-o", "json", "-f", str(HOSTS_YAML)]
    for f in files:
        args += ["-f", str(f)]
    res = gremesh(*args, *extra)
    if check and res.returncode != 0:
        raise AssertionError(f"apply failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    return res, (json.loads(res.stdout) if res.stdout.strip() else None)


def links(host):
    """The host namespace's links, as `ip -j -d link` reports them."""
    return json.loads(on_host(host, "ip", "-j", "-d", "link", "show").stdout)


def gremesh_links(host):
    return [l for l in links(host) if l.get("ifalias", "").startswith("gremesh:")]


def accepted_logins(host):
    """How many SSH logins the host's sshd has accepted so far."""
    log = STATE / host / "sshd.log"
    return len(re.findall(r"Accepted publickey", log.read_text())) if log.exists() else 0


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def mesh_yaml(name="m1", hosts=HOSTS, encapsulation="vxlan", key=42, network="10.10.0.0/16",
              extra=""):
    members = "\n".join(
        f"    - name: {h}\n      subnet: {network.split('.')[0]}.{network.split('.')[1]}.{i + 1}.0/24"
        for i, h in enumerate(hosts))
    return (f"apiVersion: gremesh.io/v1alpha1\nkind: GreMesh\nmetadata:\n  name: {name}\nspec:\n"
            f"  hosts:\n{members}\n  encapsulation: {encapsulation}\n  key: {key}\n"
            f"  network: {network}\n{extra}")


def attachment_yaml(name, host, container, address, mesh="m1", extra=""):
    return (f"---\napiVersion: gremesh.io/v1alpha1\nkind: ContainerAttachment\nmetadata:\n"
            f"  name: {name}\nspec:\n  mesh: {mesh}\n  host: {host}\n  container: {container}\n"
            f"  address: {address}\n{extra}")


def wait_for(predicate, timeout=10.0, interval=0.2):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


@pytest.fixture(scope="session")
def lab_up():
    """Three lab hosts, each with a container `web-<x>`."""
    assert BIN.exists(), f"build gremesh first ({BIN})"
    lab("up", "3")
    return HOSTS


def clean_hosts():
    """Removes every gremesh device from every lab host (the suite's own cleanup)."""
    for host in HOSTS:
        for l in gremesh_links(host):
            on_host(host, "ip", "link", "del", "dev", l["ifname"], check=False)


@pytest.fixture()
def fresh(lab_up):
    """Empty hosts with fresh containers web-a, web-b, web-c (no gremesh devices)."""
    clean_hosts()
    for host in HOSTS:
        lab("run", host, "web-" + host[-1])
    yield
    clean_hosts()


# --- Kubernetes: the API (stand-in or real cluster) and the operator -------------------------
#
# By default the API is the stand-in in tests/kube/apiserver.py (no kube-apiserver can be had
# here). Set GREMESH_E2E_KUBECONFIG to a kubeconfig to run the same suites against a real
# cluster instead; the operator then runs on this machine (it must reach the lab hosts over
# SSH) and the suites use the namespace in GREMESH_E2E_NAMESPACE (default `gremesh-e2e`).

REAL = os.environ.get("GREMESH_E2E_KUBECONFIG")
NAMESPACE = os.environ.get("GREMESH_E2E_NAMESPACE", "gremesh-e2e" if REAL else "default")
RESYNC = "3s"
METRICS = "127.0.0.1:18080"


class Cluster:
    """kubectl and the operator process, against one API server."""

    def __init__(self, kubeconfig, workdir):
        self.kubeconfig = str(kubeconfig)
        self.workdir = workdir
        self.operators = []

    def kubectl(self, *args, check=True, stdin=None, timeout=120):
        res = subprocess.run(["kubectl", "--kubeconfig", self.kubeconfig, "--cache-dir",
                              str(self.workdir / "kubectl-cache"), "-n", NAMESPACE, *args],
                             capture_output=True, text=True, input=stdin, timeout=timeout)
        if check and res.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed:\n{res.stdout}\n{res.stderr}")
        return res

    def get(self, kind, name):
        return json.loads(self.kubectl("get", kind, name, "-o", "json").stdout)

    def start_operator(self, *extra, name="op"):
        log = open(self.workdir / f"{name}-{len(self.operators)}.log", "w")
        env = dict(os.environ, KUBECONFIG=self.kubeconfig, GREMESH_LOG="gremesh=debug,info")
        listen = [] if "--listen" in extra else ["--listen", METRICS]
        proc = subprocess.Popen([str(BIN), "operator", "--namespace", NAMESPACE, "--resync", RESYNC,
                                 *listen, *extra], env=env, stdout=log,
                                stderr=subprocess.STDOUT)
        self.operators.append(proc)
        return proc

    def stop_operators(self):
        for p in self.operators:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.operators:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        self.operators = []

    def wait_ready(self, kind, name, timeout=90):
        self.kubectl("wait", "--for=condition=Ready", f"{kind}/{name}", f"--timeout={timeout}s",
                     timeout=timeout + 10)

    def wait_observed(self, name, timeout=90):
        """Waits until the mesh status describes its current generation and is Ready."""
        def done():
            m = self.get("gremesh", name)
            st = m.get("status", {})
            ready = any(c["type"] == "Ready" and c["status"] == "True" for c in st.get("conditions", []))
            return st.get("observedGeneration") == m["metadata"]["generation"] and ready
        assert wait_for(done, timeout=timeout, interval=0.5), self.get("gremesh", name)


@pytest.fixture(scope="session")
def cluster(lab_up, tmp_path_factory):
    work = tmp_path_factory.mktemp("kube")
    server = None
    if REAL:
        kubeconfig = Path(REAL)
    else:
        kubeconfig = work / "kubeconfig"
        server = subprocess.Popen([sys.executable, str(ROOT / "tests/kube/apiserver.py"), "--port", "18460",
                                   "--kubeconfig", str(kubeconfig)],
                                  stdout=subprocess.PIPE, stderr=open(work / "apiserver.log", "w"), text=True)
        server.stdout.readline()  # the ready line
        assert wait_for(kubeconfig.exists, timeout=10)
    c = Cluster(kubeconfig, work)
    if REAL:
        c.kubectl("create", "namespace", NAMESPACE, check=False)
    c.kubectl("apply", "-f", str(ROOT / "crds/gremesh.yaml"))
    c.kubectl("apply", "-f", str(HOSTS_YAML))
    yield c
    c.stop_operators()
    if server:
        server.terminate()
        server.wait(timeout=10)


def mesh_doc(hosts, mtu=None):
    members = "".join(f"    - name: {h}\n      subnet: 10.30.{i + 1}.0/24\n" for i, h in enumerate(HOSTS) if h in hosts)
    doc = (f"apiVersion: gremesh.io/v1alpha1\nkind: GreMesh\nmetadata:\n  name: om\nspec:\n"
           f"  hosts:\n{members}  encapsulation: vxlan\n  key: 3030\n  network: 10.30.0.0/16\n")
    if mtu:
        doc += f"  mtu: {mtu}\n"
    return doc


def attach_doc(host):
    i = HOSTS.index(host) + 1
    return (f"---\napiVersion: gremesh.io/v1alpha1\nkind: ContainerAttachment\nmetadata:\n  name: om-{host}\n"
            f"spec:\n  mesh: om\n  host: {host}\n  container: web-{host[-1]}\n  address: 10.30.{i}.10\n")


def ping(src, dst_host):
    i = HOSTS.index(dst_host) + 1
    return on_host(src, "docker", "exec", "web-" + src[-1], "ping", "-c", "1", "-W", "2",
                   f"10.30.{i}.10", check=False).returncode == 0


@pytest.fixture()
def running(cluster, fresh):
    """A running operator and an empty mesh namespace; everything is deleted afterwards."""
    cluster.start_operator()
    yield cluster
    cluster.kubectl("delete", "containerattachments", "--all", "--timeout=60s", check=False)
    cluster.kubectl("delete", "gremesh", "--all", "--timeout=60s", check=False)
    cluster.stop_operators()


