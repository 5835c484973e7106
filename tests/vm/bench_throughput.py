#!/usr/bin/env python3
"""Benchmark on the VM lab: converge time of the 3-guest gretap mesh from empty, the no-op pass,
and TCP throughput (iperf3) between two guests' containers across the mesh versus directly over
the underlay between the same two guests. Writes bench/gretap.md and bench/gretap.json.

Run as root from the repository, separately from the test suite:
    tests/vm/vmlab.sh up 3 && python3 tests/vm/bench_throughput.py
It changes the guests (removes their containers and gremesh devices first).
"""

import json
import os
import platform
import statistics
import sys
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from vmlab_helpers import (BIN, GUESTS, ROOT, STATE, VMLAB, apply, guest_ip,  # noqa: E402
                           in_container, parallel, q, reset_guest, run, sh, start_container)
from test_gretap import ADDRS, CONTAINERS, mesh_yaml  # noqa: E402

CONVERGE_RUNS = 3
NOOP_RUNS = 3
IPERF_SECONDS = 10
IPERF_ROUNDS = 2
SERVER, CLIENT = "vm-b", "vm-a"


def loadavg():
    return float(Path("/proc/loadavg").read_text().split()[0])


def remove_mesh_devices(guest):
    """Every gremesh device goes; the containers stay (they are the workload, not the mesh)."""
    names = [l["ifname"] for l in json.loads(sh(guest, "ip -j link show").stdout)
             if l.get("ifalias", "").startswith("gremesh:")]
    names.sort(key=lambda n: n.startswith("gm-"))
    if names:
        sh(guest, "; ".join(f"ip link del dev {q(n)} 2>/dev/null" for n in names) + "; true")


def timed_apply(manifest):
    t0 = time.monotonic()
    _, report = apply(manifest)
    wall = time.monotonic() - t0
    assert all(h["converged"] for h in report["hosts"]), report
    return wall, report


def converge(manifest):
    walls, steps, trips = [], [], []
    for _ in range(CONVERGE_RUNS):
        parallel(remove_mesh_devices, GUESTS)
        wall, report = timed_apply(manifest)
        walls.append(wall)
        steps.append({h["host"]: h["applied"] for h in report["hosts"]})
        trips.append({h["host"]: h["roundTrips"] for h in report["hosts"]})
    noop = []
    for _ in range(NOOP_RUNS):
        wall, report = timed_apply(manifest)
        assert all(h["planned"] == [] for h in report["hosts"]), report
        noop.append(wall)
    return {
        "runs_s": [round(w, 2) for w in walls],
        "median_s": round(statistics.median(walls), 2),
        "steps_per_host": steps[0],
        "round_trips_per_host": trips[0],
        "noop_round_trips_per_host": {h["host"]: h["roundTrips"] for h in report["hosts"]},
        "noop_runs_s": [round(w, 2) for w in noop],
        "noop_median_s": round(statistics.median(noop), 2),
    }


def iperf_server(guest, netns_cmd, bind):
    sh(guest, f"{netns_cmd} iperf3 -s -1 -D -B {bind} -p 5201 && "
              f"for i in $(seq 50); do {netns_cmd} ss -Hltn 'sport = :5201' | grep -q . && exit 0; "
              f"sleep 0.2; done; exit 1")


def pid_of(guest, container):
    return sh(guest, f"docker inspect --format '{{{{.State.Pid}}}}' {container}").stdout.strip()


def tap_tx_dropped(guest):
    """Frames this machine dropped on the way into the guest (its tap's queue was full)."""
    tap = f"gmvm-{guest[-1]}"
    return int(Path(f"/sys/class/net/{tap}/statistics/tx_dropped").read_text())


def iperf(path):
    """One iperf3 TCP run from CLIENT to SERVER, across the mesh or over the underlay."""
    if path == "mesh":
        srv_ns = f"nsenter -t {pid_of(SERVER, CONTAINERS[SERVER])} -n"
        cli_ns = f"nsenter -t {pid_of(CLIENT, CONTAINERS[CLIENT])} -n"
        target = ADDRS[SERVER]
    else:
        srv_ns = cli_ns = ""
        target = guest_ip(SERVER)
    iperf_server(SERVER, srv_ns, target)
    drops0 = tap_tx_dropped(SERVER)
    out = sh(CLIENT, f"{cli_ns} iperf3 -c {target} -p 5201 -t {IPERF_SECONDS} -J",
             timeout=IPERF_SECONDS + 60).stdout
    end = json.loads(out)["end"]
    return {
        "tap_tx_dropped": tap_tx_dropped(SERVER) - drops0,
        "received_mbit_s": round(end["sum_received"]["bits_per_second"] / 1e6, 1),
        "retransmits": end["sum_sent"].get("retransmits"),
        "sender_cpu_pct": round(end["cpu_utilization_percent"]["host_total"], 1),
        "receiver_cpu_pct": round(end["cpu_utilization_percent"]["remote_total"], 1),
    }


def rtt(path):
    target = ADDRS[SERVER] if path == "mesh" else guest_ip(SERVER)
    cmd = ("ping", "-c", "20", "-i", "0.2", "-q", target)
    res = (in_container(CLIENT, CONTAINERS[CLIENT], *cmd) if path == "mesh"
           else sh(CLIENT, q(*cmd)))
    line = next(l for l in res.stdout.splitlines() if "min/avg/max" in l)
    mn, avg, mx, _ = line.split("=")[1].strip().split()[0].split("/")
    return {"min_ms": float(mn), "avg_ms": float(avg), "max_ms": float(mx)}


def write(results):
    out_json = ROOT / "bench" / "gretap.json"
    out_md = ROOT / "bench" / "gretap.md"
    out_json.write_text(json.dumps(results, indent=2) + "\n")
    m, c, t = results["meta"], results["converge"], results["throughput"]
    rows = "\n".join(
        f"| {path} | {' / '.join(str(r['received_mbit_s']) for r in t[path]['runs'])} | "
        f"{t[path]['median_mbit_s']} | {results['rtt'][path]['avg_ms']} | "
        f"{' / '.join(str(r['retransmits']) for r in t[path]['runs'])} | "
        f"{' / '.join(str(r['tap_tx_dropped']) for r in t[path]['runs'])} |"
        for path in ("mesh", "underlay"))
    ratio = round(t["mesh"]["median_mbit_s"] / t["underlay"]["median_mbit_s"], 2)
    out_md.write_text(f"""# gretap benchmark on the VM lab (`tests/vm/bench_throughput.py`)

Three QEMU guests (TCG software emulation, 1 vCPU and {m['guest_mem_mib']} MiB each, Debian
kernel {m['guest_kernel']}) on one machine ({m['cpus']} CPUs, kernel {m['machine_kernel']}),
`{m['binary']}`, {m['date']}. Machine load average {m['loadavg_before']} before and
{m['loadavg_after']} after (another developer's tests may run at the same time).
Mesh: gretap, key 7, MTU 1458, one container per guest (see `tests/vm/test_gretap.py`).

## Converge

Wall time of a whole `gremesh apply` (process start to exit, SSH set-up included) over the
three guests; "from empty" = no gremesh device on any guest, containers running.

| | runs (s) | median (s) | steps per host | round trips per host |
| --- | --- | --- | --- | --- |
| from empty | {' / '.join(map(str, c['runs_s']))} | {c['median_s']} | {', '.join(f'{h} {n}' for h, n in c['steps_per_host'].items())} | {', '.join(f'{h} {n}' for h, n in c['round_trips_per_host'].items())} |
| no-op | {' / '.join(map(str, c['noop_runs_s']))} | {c['noop_median_s']} | 0 | {', '.join(f'{h} {n}' for h, n in c['noop_round_trips_per_host'].items())} |

## Throughput: {CLIENT} → {SERVER}, iperf3 TCP, {IPERF_SECONDS} s per run

| path | runs (Mbit/s) | median (Mbit/s) | ping avg RTT (ms) | TCP retransmits | drops on {SERVER}'s tap |
| --- | --- | --- | --- | --- | --- |
{rows}

Mesh / underlay: {ratio}. "mesh" is container to container (veth, bridge, gretap with key,
underlay, and back); "underlay" is guest to guest over the same virtio-net link without GRE.
Under TCG both are bound by the emulated CPUs (every packet is copied and checksummed by
emulated code), so these figures compare the two paths on this machine; they say nothing
about line rate on real hosts. Retransmits, when a run has any, go with drops on the
receiving guest's tap on this machine: its queue overflows while the emulated receiver, which
on the mesh path also decapsulates and bridges every frame, falls behind (the machine is
shared, so this varies from run to run).
""")
    print(out_md.read_text())


def main():
    if os.geteuid() != 0:
        sys.exit("run as root")
    run([str(VMLAB), "up", "3"], timeout=1200)
    manifest = Path(STATE) / "bench-gretap.yaml"
    manifest.write_text(mesh_yaml())
    load0 = loadavg()
    parallel(reset_guest, GUESTS)
    parallel(lambda g: start_container(g, CONTAINERS[g]), GUESTS)
    conv = converge(manifest)
    print("converge:", conv)

    throughput = {"mesh": {"runs": []}, "underlay": {"runs": []}}
    for _ in range(IPERF_ROUNDS):
        for path in ("mesh", "underlay"):
            throughput[path]["runs"].append(iperf(path))
            print(path, throughput[path]["runs"][-1])
    for path in throughput:
        throughput[path]["median_mbit_s"] = round(
            statistics.median(r["received_mbit_s"] for r in throughput[path]["runs"]), 1)
    rtts = {path: rtt(path) for path in ("mesh", "underlay")}

    kernel = sh(SERVER, "uname -r").stdout.strip()
    results = {
        "meta": {
            "binary": str(BIN.relative_to(ROOT)) if BIN.is_relative_to(ROOT) else str(BIN),
            "cpus": os.cpu_count(),
            "machine_kernel": platform.release(),
            "guest_kernel": kernel,
            "guest_mem_mib": int(os.environ.get("GREMESH_VMLAB_MEM", "512")),
            "accel": "tcg",
            "date": date.today().isoformat(),
            "loadavg_before": load0,
            "loadavg_after": loadavg(),
        },
        "converge": conv,
        "throughput": throughput,
        "rtt": rtts,
    }
    write(results)


if __name__ == "__main__":
    main()
