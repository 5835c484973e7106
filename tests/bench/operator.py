#!/usr/bin/env python3
"""Benchmark of `gremesh operator` against the API stand-in (tests/kube/apiserver.py) and the
lab: time from `kubectl apply` to Ready for a 3-host mesh with 6 attachments, operator resident
memory with 8 lab hosts idle, and API requests per resync of converged meshes (target: reads
only). Writes bench/operator.md and bench/operator.json.

Run as root from the repository: `python3 tests/bench/operator.py`.
"""

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LAB = ROOT / "tests/lab/lab.sh"
STATE = Path(os.environ.get("GREMESH_LAB_STATE", "/run/gremesh-lab"))
BIN = next(p for p in (ROOT / "target/release/gremesh", ROOT / "target/debug/gremesh") if p.exists())
NAMES = [f"host-{c}" for c in "abcdefgh"]
RESYNC_S = 5
WINDOW_S = 30


def sh(*cmd, **kw):
    return subprocess.run([str(c) for c in cmd], check=True, capture_output=True, text=True, **kw)


class Kube:
    def __init__(self, work):
        self.kubeconfig = work / "kubeconfig"
        self.cache = work / "cache"

    def __call__(self, *args, stdin=None):
        return sh("kubectl", "--kubeconfig", self.kubeconfig, "--cache-dir", self.cache, *args, input=stdin)


def mesh(name, hosts, third_octet_base, key):
    members = "".join(f"    - name: {h}\n      subnet: 10.{third_octet_base}.{i + 1}.0/24\n" for i, h in enumerate(hosts))
    return (f"apiVersion: gremesh.io/v1alpha1\nkind: GreMesh\nmetadata:\n  name: {name}\nspec:\n  hosts:\n{members}"
            f"  encapsulation: vxlan\n  key: {key}\n  network: 10.{third_octet_base}.0.0/16\n")


def attachment(name, mesh_name, host, container, address):
    return (f"---\napiVersion: gremesh.io/v1alpha1\nkind: ContainerAttachment\nmetadata:\n  name: {name}\n"
            f"spec:\n  mesh: {mesh_name}\n  host: {host}\n  container: {container}\n  address: {address}\n")


def ready(kube, kind, name):
    out = json.loads(kube("get", kind, name, "-o", "json").stdout)
    st = out.get("status", {})
    return any(c["type"] == "Ready" and c["status"] == "True" for c in st.get("conditions", []))


def wait(pred, timeout=120):
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(0.1)
    sys.exit("timed out")


def rss_kib(pid):
    text = Path(f"/proc/{pid}/status").read_text()
    return {k: int(re.search(rf"{k}:\s+(\d+)", text).group(1)) for k in ("VmRSS", "VmHWM")}


def clean(hosts):
    for h in hosts:
        for link in json.loads(sh(LAB, "sh", h, "ip", "-j", "link", "show").stdout):
            if link.get("ifalias", "").startswith("gremesh:"):
                subprocess.run([str(LAB), "sh", h, "ip", "link", "del", "dev", link["ifname"]], capture_output=True)


def main():
    sh(LAB, "up", "8", timeout=900)
    clean(NAMES)
    for h in NAMES[:3]:
        sh(LAB, "run", h, f"web-{h[-1]}")
        sh(LAB, "run", h, f"app-{h[-1]}")
    work = Path(tempfile.mkdtemp(prefix="gremesh-bench-"))
    api_log = open(work / "apiserver.log", "w")
    server = subprocess.Popen([sys.executable, str(ROOT / "tests/kube/apiserver.py"), "--port", "18470",
                               "--kubeconfig", str(work / "kubeconfig"), "-v"], stdout=subprocess.PIPE,
                              stderr=api_log, text=True)
    server.stdout.readline()
    kube = Kube(work)
    op = None
    try:
        kube("apply", "-f", ROOT / "crds/gremesh.yaml")
        kube("apply", "-f", STATE / "hosts.yaml")
        op = subprocess.Popen([str(BIN), "operator", "--namespace", "default", "--resync", f"{RESYNC_S}s",
                               "--listen", "127.0.0.1:18090"], env=dict(os.environ, KUBECONFIG=str(work / "kubeconfig")),
                              stdout=open(work / "operator.log", "w"), stderr=subprocess.STDOUT)
        time.sleep(2)

        # 1. kubectl apply → Ready, 3 hosts, 6 attachments.
        doc = mesh("bench3", NAMES[:3], 40, 4040)
        atts = []
        for i, h in enumerate(NAMES[:3]):
            for j, c in enumerate(("web", "app")):
                atts.append(f"bench3-{c}-{h[-1]}")
                doc += attachment(atts[-1], "bench3", h, f"{c}-{h[-1]}", f"10.40.{i + 1}.{10 + j}")
        start = time.time()
        kube("apply", "-f", "-", stdin=doc)
        wait(lambda: ready(kube, "gremesh", "bench3") and all(ready(kube, "containerattachment", a) for a in atts))
        apply_to_ready = time.time() - start

        # 2. Idle memory with 8 hosts: a second mesh over all eight.
        kube("apply", "-f", "-", stdin=mesh("bench8", NAMES, 41, 4141))
        wait(lambda: ready(kube, "gremesh", "bench8"))
        time.sleep(3)
        mark = sum(1 for _ in open(work / "apiserver.log"))
        idle_start = time.time()
        time.sleep(WINDOW_S)
        memory = rss_kib(op.pid)
        window = time.time() - idle_start

        # 3. API requests during the idle window (watch streams excluded).
        lines = open(work / "apiserver.log").read().splitlines()[mark:]
        reqs = [l for l in lines if re.search(r"\b(GET|POST|PUT|PATCH|DELETE) /", l) and "watch=" not in l]
        writes = [l for l in reqs if not re.search(r"\bGET /", l)]
        # Every pass lists the namespace's meshes exactly once: that counts the passes.
        resyncs = max(1, sum(1 for l in reqs if re.search(r"GET /apis/gremesh.io/v1alpha1/namespaces/default/gremeshes[ ?]", l)))
        result = {
            "apply_to_ready_s": round(apply_to_ready, 2),
            "operator_rss_kib": memory["VmRSS"],
            "operator_peak_rss_kib": memory["VmHWM"],
            "idle_window_s": round(window, 1),
            "requests_in_window": len(reqs),
            "writes_in_window": len(writes),
            "passes_in_window": resyncs,
            "requests_per_mesh_resync": round(len(reqs) / resyncs, 1),
            "write_samples": writes[:5],
        }
    finally:
        if op:
            op.terminate()
            op.wait(timeout=15)
        server.terminate()
        clean(NAMES)
    out = ROOT / "bench"
    out.mkdir(exist_ok=True)
    (out / "operator.json").write_text(json.dumps(result, indent=2) + "\n")
    md = [
        "# Operator benchmark (`tests/bench/operator.py`)",
        "",
        f"`{BIN.relative_to(ROOT)} operator --resync {RESYNC_S}s` against the API stand-in "
        "(tests/kube/apiserver.py) and the lab (8 hosts, 2 CPUs), {0}.".format(time.strftime("%Y-%m-%d")),
        "",
        "| measure | value |",
        "| --- | --- |",
        f"| `kubectl apply` → Ready, 3-host VXLAN mesh + 6 attachments | {result['apply_to_ready_s']} s |",
        f"| operator resident memory, idle, meshes over 8 hosts (peak) | {result['operator_rss_kib'] // 1024} MiB ({result['operator_peak_rss_kib'] // 1024} MiB) |",
        f"| API requests per resync of a converged mesh (watches excluded) | {result['requests_per_mesh_resync']} |",
        f"| of which writes, in {result['passes_in_window']} idle passes ({result['idle_window_s']} s) | {result['writes_in_window']} |",
    ]
    (out / "operator.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
