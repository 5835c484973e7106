"""Fixtures for the lab end-to-end suite: the lab itself, the gremesh binary, and helpers to
run commands on lab hosts and inside their containers.

The suite needs root and drives `tests/lab/lab.sh`; `tests/run` brings the lab up first.
"""

import json
import os
import re
import subprocess
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
