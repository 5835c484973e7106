#!/usr/bin/env python3
"""Benchmark: converge time from empty hosts, no-op pass time, and SSH round trips per host,
for VXLAN meshes over 2, 4 and 8 lab hosts (with one attached container per host for 2 and 4,
none for 8). Writes bench/converge.md and bench/converge.json.

Run as root from the repository: `python3 tests/bench/converge.py` (builds nothing: uses
target/release/gremesh if present, else target/debug/gremesh).
"""

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LAB = ROOT / "tests" / "lab" / "lab.sh"
STATE = Path(os.environ.get("GREMESH_LAB_STATE", "/run/gremesh-lab"))
BIN = next(p for p in (ROOT / "target/release/gremesh", ROOT / "target/debug/gremesh") if p.exists())
NAMES = [f"host-{c}" for c in "abcdefgh"]
NOOP_RUNS = 5


def sh(*cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def manifest(n, containers):
    hosts = NAMES[:n]
    members = "\n".join(f"    - name: {h}\n      subnet: 10.20.{i + 1}.0/24" for i, h in enumerate(hosts))
    text = (f"apiVersion: gremesh.io/v1alpha1\nkind: GreMesh\nmetadata:\n  name: bench\nspec:\n"
            f"  hosts:\n{members}\n  encapsulation: vxlan\n  key: 77\n  network: 10.20.0.0/16\n")
    if containers:
        for i, h in enumerate(hosts):
            text += (f"---\napiVersion: gremesh.io/v1alpha1\nkind: ContainerAttachment\nmetadata:\n"
                     f"  name: bench-{h}\nspec:\n  mesh: bench\n  host: {h}\n  container: bench-{h}\n"
                     f"  address: 10.20.{i + 1}.10\n")
    path = Path(f"/tmp/gremesh-bench-{n}.yaml")
    path.write_text(text)
    return path


def clean(n):
    for h in NAMES[:n]:
        out = sh(str(LAB), "sh", h, "ip", "-j", "link", "show").stdout
        for link in json.loads(out):
            if link.get("ifalias", "").startswith("gremesh:"):
                subprocess.run([str(LAB), "sh", h, "ip", "link", "del", "dev", link["ifname"]],
                               capture_output=True)


def apply(path):
    start = time.perf_counter()
    res = subprocess.run([str(BIN), "apply", "-o", "json", "-f", str(STATE / "hosts.yaml"), "-f",
                          str(path)], capture_output=True, text=True)
    wall = time.perf_counter() - start
    if res.returncode != 0:
        sys.exit(f"apply failed:\n{res.stdout}\n{res.stderr}")
    return wall, json.loads(res.stdout)


def measure(n, containers):
    sh(str(LAB), "up", str(n), timeout=600)
    for h in NAMES[:n]:
        if containers:
            sh(str(LAB), "run", h, f"bench-{h}")
    clean(n)
    path = manifest(n, containers)
    wall, report = apply(path)
    assert all(m["ready"] for m in report["meshes"]), report
    converge = {
        "wall_s": round(wall, 3),
        "steps_per_host": max(len(h["planned"]) for h in report["hosts"]),
        "round_trips_per_host": sorted({h["roundTrips"] for h in report["hosts"]}),
    }
    noop_walls, trips = [], set()
    for _ in range(NOOP_RUNS):
        wall, report = apply(path)
        assert all(h["planned"] == [] for h in report["hosts"]), report
        noop_walls.append(wall)
        trips |= {h["roundTrips"] for h in report["hosts"]}
    clean(n)
    return {
        "hosts": n,
        "containers": n if containers else 0,
        "converge": converge,
        "noop": {"median_s": round(statistics.median(noop_walls), 3), "max_s": round(max(noop_walls), 3),
                 "round_trips_per_host": sorted(trips)},
    }


def main():
    results = [measure(2, True), measure(4, True), measure(8, False)]
    meta = {"binary": str(BIN.relative_to(ROOT)), "cpus": os.cpu_count(), "kernel": platform.release(),
            "date": time.strftime("%Y-%m-%d")}
    out = ROOT / "bench"
    out.mkdir(exist_ok=True)
    (out / "converge.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    lines = [
        "# Converge benchmark (`tests/bench/converge.py`)",
        "",
        f"Lab hosts on one machine ({meta['cpus']} CPUs, kernel {meta['kernel']}), VXLAN mesh, "
        f"`{meta['binary']}`, {meta['date']}. Wall time of a whole `gremesh apply` (process start "
        "to exit, SSH connection set-up included); no-op: median and max of "
        f"{NOOP_RUNS} passes against converged hosts.",
        "",
        "| hosts | containers | steps/host | converge (s) | round trips/host | no-op median (s) | no-op max (s) | no-op round trips/host |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        c, n = r["converge"], r["noop"]
        lines.append(f"| {r['hosts']} | {r['containers']} | {c['steps_per_host']} | {c['wall_s']} | "
                     f"{'/'.join(map(str, c['round_trips_per_host']))} | {n['median_s']} | {n['max_s']} | "
                     f"{'/'.join(map(str, n['round_trips_per_host']))} |")
    (out / "converge.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
