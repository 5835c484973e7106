"""Argo CD integration (deploy/argocd): the Lua health checks, run with lua5.1 on every
fixture of their health_test.yaml, the generated argocd-cm snippet, and the example
Applications and sync-wave manifests.

lua5.1 is the reference Lua of the 5.1 language that Argo CD's interpreter (gopher-lua)
implements; harness.lua gives the scripts only what Argo CD gives them (`obj` and the base,
table, string and math libraries).
"""

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ARGOCD = ROOT / "deploy" / "argocd"
HEALTH = ARGOCD / "health"
HARNESS = Path(__file__).resolve().parent / "harness.lua"
KINDS = ["GreMesh", "ContainerAttachment", "DockerHost"]
WAVES = {"Secret": "0", "DockerHost": "0", "GreMesh": "1", "ContainerAttachment": "2"}


def to_lua(value):
    """A Lua literal for a JSON-like value, as Argo CD hands objects to Lua (arrays become
    1-based tables; null fields are absent)."""
    if isinstance(value, dict):
        items = [f"[{to_lua(str(k))}]={to_lua(v)}" for k, v in value.items() if v is not None]
        return "{" + ",".join(items) + "}"
    if isinstance(value, list):
        return "{" + ",".join(to_lua(v) for v in value) + "}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        assert math.isfinite(value)
        return repr(value)
    text = str(value)
    return '"' + "".join(c if c.isalnum() or c in " :/.,-_()[]{}+=@;'<>*#!?$%&|~^`" else
                         f"\\{ord(c)}" if ord(c) < 256 else c for c in text) + '"'


def run_health(kind, obj, tmp_path):
    lua_obj = tmp_path / "obj.lua"
    lua_obj.write_text("return " + to_lua(obj) + "\n")
    script = HEALTH / "gremesh.io" / kind / "health.lua"
    res = subprocess.run(["lua5.1", str(HARNESS), str(script), str(lua_obj)],
                         capture_output=True, text=True, timeout=10)
    assert res.returncode == 0, res.stderr
    status, _, message = res.stdout.partition("\n")
    return status, message


def cases():
    for kind in KINDS:
        spec = yaml.safe_load((HEALTH / "gremesh.io" / kind / "health_test.yaml").read_text())
        for case in spec["tests"]:
            yield pytest.param(kind, case, id=f"{kind}-{Path(case['inputPath']).stem}")


@pytest.mark.parametrize("kind, case", list(cases()))
def test_health(kind, case, tmp_path):
    obj = yaml.safe_load((HEALTH / "gremesh.io" / kind / case["inputPath"]).read_text())
    assert obj["kind"] == kind
    status, message = run_health(kind, obj, tmp_path)
    assert (status, message) == (case["healthStatus"]["status"],
                                 case["healthStatus"]["message"])


@pytest.mark.parametrize("kind, outcomes", [
    ("GreMesh", {"Healthy", "Progressing", "Degraded"}),
    ("ContainerAttachment", {"Healthy", "Progressing", "Degraded"}),
    # A host never makes a sync wait (see its health.lua): no Progressing.
    ("DockerHost", {"Healthy", "Degraded"}),
])
def test_every_outcome_has_a_fixture(kind, outcomes):
    spec = yaml.safe_load((HEALTH / "gremesh.io" / kind / "health_test.yaml").read_text())
    assert {c["healthStatus"]["status"] for c in spec["tests"]} == outcomes
    listed = {c["inputPath"] for c in spec["tests"]}
    on_disk = {f"testdata/{p.name}" for p in (HEALTH / "gremesh.io" / kind / "testdata").iterdir()}
    assert listed == on_disk


def test_every_operator_reason_is_covered():
    """Each failure reason the operator writes (operator/src/controller/status.rs) appears in
    a fixture, so a new reason shows up here first."""
    source = (ROOT / "operator" / "src" / "controller" / "status.rs").read_text()
    reasons = set(re.findall(r'"([A-Z][A-Za-z]+)"', source)) - {
        "Ready", "Progressing", "Degraded", "True", "False", "GreMesh", "ContainerAttachment",
        "DockerHost"}
    fixtures = " ".join(p.read_text() for p in HEALTH.rglob("testdata/*.yaml"))
    # NotAttached is a catch-all for issue reasons the operator does not know yet;
    # AddressConflict is an engine reason the operator writes as Conflict.
    missing = {r for r in reasons if f"reason: {r}" not in fixtures} - {"NotAttached",
                                                                        "AddressConflict"}
    assert not missing, f"reasons without a fixture: {sorted(missing)}"


def test_scripts_touch_nothing_outside_the_sandbox(tmp_path):
    """The harness really withholds io/os: a script using them fails."""
    bad = tmp_path / "health.lua"
    bad.write_text('local hs = {}\nhs.status = io.read("*l")\nreturn hs\n')
    obj = tmp_path / "obj.lua"
    obj.write_text("return {}\n")
    res = subprocess.run(["lua5.1", str(HARNESS), str(bad), str(obj)], capture_output=True,
                         text=True, timeout=10)
    assert res.returncode != 0 and "io" in res.stderr


def test_argocd_cm_is_generated_from_the_scripts():
    res = subprocess.run([sys.executable, str(ARGOCD / "generate-argocd-cm.py"), "--check"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    cm = yaml.safe_load((ARGOCD / "argocd-cm.yaml").read_text())
    assert cm["kind"] == "ConfigMap" and cm["metadata"]["name"] == "argocd-cm"
    assert set(cm["data"]) == {f"resource.customizations.health.gremesh.io_{k}" for k in KINDS}
    for kind in KINDS:
        script = (HEALTH / "gremesh.io" / kind / "health.lua").read_text()
        assert cm["data"][f"resource.customizations.health.gremesh.io_{kind}"] == script


def _crd_schemas():
    schemas = {}
    for crd in yaml.safe_load_all((ROOT / "crds" / "gremesh.yaml").read_text()):
        if crd:
            version = crd["spec"]["versions"][0]
            schemas[crd["spec"]["names"]["kind"]] = version["schema"]["openAPIV3Schema"]
    return schemas


def _example_network():
    docs = []
    for path in sorted((ARGOCD / "examples" / "network").glob("*.yaml")):
        docs += [(path.name, d) for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def test_sync_waves():
    docs = _example_network()
    assert {d["kind"] for _, d in docs} == set(WAVES)
    for name, doc in docs:
        wave = doc["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"]
        assert wave == WAVES[doc["kind"]], (name, doc["kind"])


def test_example_objects_match_the_crds():
    """The example DockerHosts, meshes and attachments are valid for the CRD schemas."""
    schemas = _crd_schemas()
    for name, doc in _example_network():
        if doc["kind"] in schemas:
            jsonschema.validate(doc["spec"], schemas[doc["kind"]]["properties"]["spec"])
    # and the references between them hold
    kinds = {}
    for _, doc in _example_network():
        kinds.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = doc
    for host in kinds["DockerHost"].values():
        assert host["spec"]["sshKeySecretRef"]["name"] in kinds["Secret"]
    for mesh in kinds["GreMesh"].values():
        assert all(h["name"] in kinds["DockerHost"] for h in mesh["spec"]["hosts"])
    for att in kinds["ContainerAttachment"].values():
        assert att["spec"]["mesh"] in kinds["GreMesh"]


def test_example_applications():
    values_schema = json.loads((ROOT / "charts" / "gremesh" / "values.schema.json").read_text())
    apps = {p.name: yaml.safe_load(p.read_text())
            for p in (ARGOCD / "examples").glob("*-application.yaml")}
    assert set(apps) == {"operator-application.yaml", "network-application.yaml"}
    for app in apps.values():
        assert app["apiVersion"] == "argoproj.io/v1alpha1" and app["kind"] == "Application"
        assert (ROOT / app["spec"]["source"]["path"]).is_dir()
    operator = apps["operator-application.yaml"]["spec"]["source"]
    assert (ROOT / operator["path"] / "Chart.yaml").exists()
    jsonschema.validate(operator["helm"]["valuesObject"], values_schema)
    network = apps["network-application.yaml"]["spec"]
    assert network["source"]["path"] == "deploy/argocd/examples/network"
    assert "SkipDryRunOnMissingResource=true" in network["syncPolicy"]["syncOptions"]
