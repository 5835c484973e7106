"""Helpers for the VM lab suite and benchmark: the gremesh binary, commands in the guests over
SSH and inside their containers, resetting a guest.

The guests boot Debian's distribution kernel under QEMU, so unlike the namespace lab they have
real GRE (`ip_gre`). Everything here needs root. (A module of its own rather than conftest.py,
so that `from vmlab_helpers import ...` never picks up another suite's conftest.)
"""

import json
import os
import shlex
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VMLAB = ROOT / "tests" / "vm" / "vmlab.sh"
STATE = Path(os.environ.get("GREMESH_VMLAB_STATE", "/run/gremesh-vmlab"))
HOSTS_YAML = STATE / "hosts.yaml"
BIN = Path(os.environ.get("GREMESH_BIN", ROOT / "target" / "debug" / "gremesh"))
GUESTS = ["vm-a", "vm-b", "vm-c"]
IMAGE = "gremesh-vmlab/busybox:latest"


def guest_ip(guest):
    return f"10.201.0.{11 + 'abcdefgh'.index(guest[-1])}"


def run(cmd, check=True, timeout=120, **kw):
    """Runs a command on this machine, returning CompletedProcess with text output."""
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if check and res.returncode != 0:
        raise AssertionError(f"{cmd} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    return res


def ssh_argv(guest, script):
    """ssh into a guest as root (pinned host key, the lab's master connection if it is up)."""
    return [
        "ssh", "-i", str(STATE / "id_ed25519"),
        "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
        "-o", f"UserKnownHostsFile={STATE / 'known_hosts'}", "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR",
        "-o", f"ControlPath={STATE}/ssh-%h.sock", "-o", "ControlMaster=no",
        f"root@{guest_ip(guest)}", script,
    ]


def sh(guest, script, check=True, timeout=120):
    """Runs a shell script (a string for the guest's shell) in a guest."""
    res = subprocess.run(ssh_argv(guest, script), capture_output=True, text=True,
                         timeout=timeout, stdin=subprocess.DEVNULL)
    if check and res.returncode != 0:
        raise AssertionError(f"{guest}: {script!r} failed ({res.returncode}):\n"
                             f"{res.stdout}\n{res.stderr}")
    return res


def sh_bg(guest, script):
    """Starts a script in a guest and returns the Popen (stdout and stderr piped, as text)."""
    return subprocess.Popen(ssh_argv(guest, script), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def parallel(fn, items):
    """fn(item) for every item at once (the guests are slow, the work independent)."""
    with ThreadPoolExecutor(max_workers=max(1, len(items))) as ex:
        return list(ex.map(fn, items))


def q(*words):
    return " ".join(shlex.quote(str(w)) for w in words)


def in_container(guest, container, *cmd, check=True, timeout=60):
    """Runs a machine binary (iputils ping, tcpdump, iperf3, ip) in a container's network
    namespace inside a guest: the PID comes from `docker inspect`, as gremesh does it."""
    script = (f"pid=$(docker inspect --format '{{{{.State.Pid}}}}' {q(container)}) && "
              f"exec nsenter -t \"$pid\" -n {q(*cmd)}")
    return sh(guest, script, check=check, timeout=timeout)


def docker_exec(guest, container, *cmd, check=True, timeout=120):
    """Runs a command inside a container with its own (busybox) tools."""
    return sh(guest, q("docker", "exec", container, *cmd), check=check, timeout=timeout)


def links(guest):
    """The guest's links as `ip -j -d link` reports them."""
    return json.loads(sh(guest, "ip -j -d link show").stdout)


def gremesh_links(guest):
    return [l for l in links(guest) if l.get("ifalias", "").startswith("gremesh:")]


def gremesh(*args, check=False, timeout=300):
    return run([str(BIN), *args], check=check, timeout=timeout)


def apply(*files, extra=(), check=True):
    """`gremesh apply -o json` with the lab guests plus the given manifests: (result, report)."""
    args = ["apply", "-o", "json", "-f", str(HOSTS_YAML)]
    for f in files:
        args += ["-f", str(f)]
    res = gremesh(*args, *extra)
    if check and res.returncode != 0:
        raise AssertionError(f"apply failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    return res, (json.loads(res.stdout) if res.stdout.strip() else None)


def plan(*files):
    """`gremesh plan -o json` (read-only): (result, report)."""
    args = ["plan", "-o", "json", "-f", str(HOSTS_YAML)]
    for f in files:
        args += ["-f", str(f)]
    res = gremesh(*args)
    return res, (json.loads(res.stdout) if res.stdout.strip() else None)


def host_report(report, guest):
    return next(h for h in report["hosts"] if h["host"] == guest)


def reset_guest(guest):
    """Removes every container, every gremesh device and the test firewall table from a guest,
    so that a mesh converges from empty."""
    sh(guest, "ids=$(docker ps -aq); [ -z \"$ids\" ] || docker rm -f $ids >/dev/null; "
              "nft delete table inet gmvmtest 2>/dev/null; true", timeout=180)
    names = [l["ifname"] for l in gremesh_links(guest)]
    # tunnels and veths first, the bridge last
    names.sort(key=lambda n: n.startswith("gm-"))
    if names:
        sh(guest, "; ".join(f"ip link del dev {q(n)} 2>/dev/null" for n in names) + "; true")


def start_container(guest, name):
    """(Re)creates a container that sleeps forever with no network but loopback."""
    sh(guest, f"docker rm -f {q(name)} >/dev/null 2>&1; "
              f"docker run -d --name {q(name)} --network none --stop-signal KILL {q(IMAGE)} "
              f"sleep 2147483647 >/dev/null", timeout=180)
