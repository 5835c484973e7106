"""The same gretap mesh through the operator path: the real `gremesh operator` binary against the
Kubernetes API stand-in (tests/kube/apiserver.py), driven only with kubectl, converging the three
guests; then `kubectl delete` and every guest is clean again with its container still running.

Runs after test_gretap.py (file order) and starts from empty guests of its own.
"""

import json
import os
import subprocess
import sys
import time

import pytest

from test_gretap import ADDRS, CONTAINERS, KEY, MESH, MTU, PAIRS, mesh_yaml
from vmlab_helpers import (BIN, GUESTS, HOSTS_YAML, ROOT, gremesh_links, in_container, parallel,
                           reset_guest, sh, start_container)

PORT = 18461


class Kubectl:
    def __init__(self, kubeconfig, workdir):
        self.kubeconfig, self.workdir = str(kubeconfig), workdir

    def __call__(self, *args, check=True, stdin=None, timeout=120):
        res = subprocess.run(["kubectl", "--kubeconfig", self.kubeconfig, "--cache-dir",
                              str(self.workdir / "kubectl-cache"), "-n", "default", *args],
                             capture_output=True, text=True, input=stdin, timeout=timeout)
        if check and res.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed:\n{res.stdout}\n{res.stderr}")
        return res

    def get(self, kind, name):
        return json.loads(self("get", kind, name, "-o", "json").stdout)


@pytest.fixture(scope="module")
def kubectl(vmlab, tmp_path_factory):
    work = tmp_path_factory.mktemp("vmkube")
    kubeconfig = work / "kubeconfig"
    server = subprocess.Popen([sys.executable, str(ROOT / "tests/kube/apiserver.py"), "--port",
                               str(PORT), "--kubeconfig", str(kubeconfig)],
                              stdout=subprocess.PIPE, stderr=open(work / "apiserver.log", "w"),
                              text=True)
    server.stdout.readline()  # the ready line
    k = Kubectl(kubeconfig, work)
    k("apply", "-f", str(ROOT / "crds/gremesh.yaml"))
    k("apply", "-f", str(HOSTS_YAML))
    log = open(work / "operator.log", "w")
    op = subprocess.Popen([str(BIN), "operator", "--namespace", "default", "--resync", "5s",
                           "--listen", "127.0.0.1:18081"],
                          env=dict(os.environ, KUBECONFIG=str(kubeconfig),
                                   GREMESH_LOG="gremesh=debug,info"),
                          stdout=log, stderr=subprocess.STDOUT)
    yield k
    op.terminate()
    try:
        op.wait(timeout=20)
    except subprocess.TimeoutExpired:
        op.kill()
    server.terminate()
    server.wait(timeout=10)
    print((work / "operator.log").read_text()[-3000:])


def test_operator_converges_gretap_mesh_and_deletes_it(kubectl, tmp_path):
    parallel(reset_guest, GUESTS)
    parallel(lambda g: start_container(g, CONTAINERS[g]), GUESTS)
    manifest = tmp_path / "mesh.yaml"
    manifest.write_text(mesh_yaml())

    t0 = time.monotonic()
    kubectl("apply", "-f", str(manifest))
    kubectl("wait", "--for=condition=Ready", f"gremesh/{MESH}", "--timeout=240s", timeout=250)
    for g in GUESTS:
        kubectl("wait", "--for=condition=Ready", f"containerattachment/{CONTAINERS[g]}",
                "--timeout=120s", timeout=130)
    print(f"kubectl apply -> Ready on three TCG guests: {time.monotonic() - t0:.1f}s")

    st = kubectl.get("gremesh", MESH)["status"]
    assert (st["mtu"], st["hostsReady"]) == (MTU, "3/3"), st
    assert {h["name"]: (h["tunnelsUp"], h["tunnelsExpected"]) for h in st["hosts"]} == \
        {g: (2, 2) for g in GUESTS}, st["hosts"]
    for g in GUESTS:
        att = kubectl.get("containerattachment", CONTAINERS[g])["status"]
        assert att["address"] == ADDRS[g] and len(att["containerId"]) == 64, att
        for l in gremesh_links(g):
            if ":tunnel:" in l["ifalias"]:
                data = l["linkinfo"]["info_kind"], l["linkinfo"]["info_data"]["ikey"]
                assert data == ("gretap", f"0.0.0.{KEY}"), (g, l)

    def one(pair):
        src, dst = pair
        return pair, in_container(src, CONTAINERS[src], "ping", "-c", "2", "-W", "3",
                                  ADDRS[dst], check=False)
    failed = [(p, r.stdout) for p, r in parallel(one, PAIRS) if r.returncode != 0]
    assert not failed, failed

    # delete: every guest loses exactly what gremesh made; the containers keep running
    kubectl("delete", "-f", str(manifest), "--timeout=180s", timeout=190)
    leftover = {g: [l["ifname"] for l in gremesh_links(g)] for g in GUESTS}
    assert leftover == {g: [] for g in GUESTS}, leftover
    for g in GUESTS:
        running = sh(g, f"docker inspect -f '{{{{.State.Running}}}}' {CONTAINERS[g]}").stdout
        assert running.strip() == "true", g
        eth1 = in_container(g, CONTAINERS[g], "ip", "link", "show", "eth1", check=False)
        assert eth1.returncode != 0, (g, eth1.stdout)
