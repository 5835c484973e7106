#!/usr/bin/env python3
"""Benchmark: time from `docker restart` of an attached container to that container pinging
across the mesh again, median and max over 20 restarts, with the operator following Docker's
event stream and without it (re-attached by the periodic resync only). Writes bench/reattach.md
and bench/reattach.json.

Run as root from the repository: `python3 tests/bench/reattach.py`.
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LAB = ROOT / "tests/lab/lab.sh"
STATE = Path(os.environ.get("GREMESH_LAB_STATE", "/run/gremesh-lab"))
BIN = next(p for p in (ROOT / "target/release/gremesh", ROOT / "target/debug/gremesh") if p.exists())
RESTARTS = 20
RESYNC = "10s"

MESH = """apiVersion: gremesh.io/v1alpha1
kind: GreMesh
metadata: {name: rb}
spec:
  hosts: [{name: host-a, subnet: 10.50.1.0/24}, {name: host-b, subnet: 10.50.2.0/24}]
  encapsulation: vxlan
  key: 5050
  network: 10.50.0.0/16
---
apiVersion: gremesh.io/v1alpha1
kind: ContainerAttachment
metadata: {name: rb-a}
spec: {mesh: rb, host: host-a, container: web-a, address: 10.50.1.10}
---
apiVersion: gremesh.io/v1alpha1
kind: ContainerAttachment
metadata: {name: rb-b}
spec: {mesh: rb, host: host-b, container: web-b, address: 10.50.2.10}
"""


def sh(*cmd, check=True, **kw):
    return subprocess.run([str(c) for c in cmd], check=check, capture_output=True, text=True, **kw)


def pings():
    return sh(LAB, "sh", "host-a", "docker", "exec", "web-a", "ping", "-c", "1", "-W", "1", "10.50.2.10",
              check=False).returncode == 0


def wait(pred, timeout):
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False


def measure(work, events):
    kubeconfig = work / "kubeconfig"
    kubectl = ["kubectl", "--kubeconfig", str(kubeconfig), "--cache-dir", str(work / "cache")]
    op = subprocess.Popen([str(BIN), "operator", "--namespace", "default", "--resync", RESYNC, "--listen",
                           "127.0.0.1:18091", f"--docker-events={'true' if events else 'false'}"],
                          env=dict(os.environ, KUBECONFIG=str(kubeconfig)), stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
    try:
        subprocess.run(kubectl + ["apply", "-f", "-"], input=MESH, text=True, check=True, capture_output=True)
        if not wait(pings, 60):
            sys.exit("mesh never came up")
        time.sleep(3)  # let the event follower connect
        samples = []
        for _ in range(RESTARTS):
            start = time.time()
            sh(LAB, "sh", "host-a", "docker", "restart", "web-a")
            if not wait(pings, 120):
                sys.exit("web-a never came back")
            samples.append(time.time() - start)
        return {"median_s": round(statistics.median(samples), 2), "max_s": round(max(samples), 2),
                "min_s": round(min(samples), 2)}
    finally:
        subprocess.run(kubectl + ["delete", "-f", "-", "--timeout=60s"], input=MESH, text=True, capture_output=True)
        op.terminate()
        op.wait(timeout=15)


def main():
    sh(LAB, "up", "3", timeout=600)
    for h in ("a", "b"):
        sh(LAB, "run", f"host-{h}", f"web-{h}")
    work = Path(tempfile.mkdtemp(prefix="gremesh-reattach-"))
    server = subprocess.Popen([sys.executable, str(ROOT / "tests/kube/apiserver.py"), "--port", "18471",
                               "--kubeconfig", str(work / "kubeconfig")], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True)
    server.stdout.readline()
    try:
        kubectl = ["kubectl", "--kubeconfig", str(work / "kubeconfig"), "--cache-dir", str(work / "cache")]
        subprocess.run(kubectl + ["apply", "-f", str(ROOT / "crds/gremesh.yaml")], check=True, capture_output=True)
        subprocess.run(kubectl + ["apply", "-f", str(STATE / "hosts.yaml")], check=True, capture_output=True)
        result = {"with_events": measure(work, True), "without_events": measure(work, False)}
    finally:
        server.terminate()
    out = ROOT / "bench"
    (out / "reattach.json").write_text(json.dumps(result, indent=2) + "\n")
    md = [
        "# Re-attach benchmark (`tests/bench/reattach.py`)",
        "",
        f"`{BIN.relative_to(ROOT)} operator --resync {RESYNC}`, lab hosts on one machine, "
        f"{RESTARTS} × `docker restart web-a`; time from the restart command to web-a pinging "
        f"web-b across the mesh again (polled every ~0.1 s), {time.strftime('%Y-%m-%d')}.",
        "",
        "| mode | median (s) | max (s) | min (s) |",
        "| --- | --- | --- | --- |",
    ]
    for mode, r in (("Docker event stream (default)", result["with_events"]),
                    (f"resync only (`--docker-events=false`, resync {RESYNC})", result["without_events"])):
        md.append(f"| {mode} | {r['median_s']} | {r['max_s']} | {r['min_s']} |")
    (out / "reattach.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
