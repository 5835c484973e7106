"""The Helm chart (charts/gremesh), rendered by the real Helm engine.

Each rendering is validated against the Kubernetes 1.32 schemas (kubectl's version here) in
strict mode, and the tests check what the chart promises: hardened pods by default, RBAC
that grants exactly what the operator uses, a values schema that rejects unknown keys, CRDs
identical to crds/gremesh.yaml and kept on uninstall, every value commented, nothing random
(an Argo CD app stays in sync), and container arguments the gremesh binary accepts.
"""

import base64
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

import helm
from helm import CHART, NAMESPACE, ROOT, lint, render

KUBE_VERSION = "1.32"
WATCHED = "meshes"

# Value combinations that every structural test runs against.
COMBINATIONS = {
    "defaults": {},
    "watch-namespace": {"watchNamespace": WATCHED},
    "replicas-2": {"replicaCount": 2},
    "service-monitor": {"metrics": {"serviceMonitor": {"enabled": True}}},
    "everything": {
        "watchNamespace": WATCHED, "replicaCount": 3, "crds": {"install": True},
        "log": {"format": "text", "level": "warn,gremesh=debug"},
        "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}},
        "image": {"digest": "sha256:" + "a" * 64},
        "imagePullSecrets": [{"name": "regcred"}],
        "rbac": {"secretNames": ["gremesh-ssh"]},
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "infra", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 100, "podAffinityTerm": {
                "topologyKey": "kubernetes.io/hostname",
                "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "gremesh"}}}}]}},
        "podAnnotations": {"example.com/team": "network"},
        "priorityClassName": "system-cluster-critical",
        "tmpVolume": {"medium": ""},
    },
}

# What the operator does against the API (operator/src/controller/), as (group, resource,
# verb) triples; resourceNames are checked separately.
WATCHED_RULES = {
    *(("gremesh.io", r, v) for r in ("dockerhosts", "gremeshes", "containerattachments")
      for v in ("get", "list", "watch")),
    ("gremesh.io", "gremeshes", "patch"),              # finalizer (JSON patch)
    ("gremesh.io", "containerattachments", "patch"),   # finalizer (JSON patch)
    ("gremesh.io", "dockerhosts/status", "patch"),
    ("gremesh.io", "gremeshes/status", "patch"),
    ("gremesh.io", "containerattachments/status", "patch"),
    ("", "secrets", "get"),                            # SSH keys, by name
    ("events.k8s.io", "events", "create"),
    ("events.k8s.io", "events", "patch"),              # event series
}
LEASE_RULES = {
    ("coordination.k8s.io", "leases", "get"),
    ("coordination.k8s.io", "leases", "create"),
    ("coordination.k8s.io", "leases", "update"),
}

DUMMY_KEY = ("-----BEGIN OPENSSH PRIVATE KEY-----\n"
             "c2VjcmV0LWJ1dC1ub3QtYS1yZWFsLWtleS1qdXN0LWZvci10ZXN0cw==\n"
             "-----END OPENSSH PRIVATE KEY-----")


@pytest.fixture(scope="module", params=sorted(COMBINATIONS))
def rendering(request):
    return request.param, COMBINATIONS[request.param], render(COMBINATIONS[request.param])


def triples(rules):
    return {(g, r, v) for rule in rules for g in rule["apiGroups"]
            for r in rule["resources"] for v in rule["verbs"]}


def operator_container(rendered):
    return rendered.one("Deployment")["spec"]["template"]["spec"]["containers"][0]


# ------------------------------------------------------------------ lint and validity


def test_lint_reports_no_warning_or_error():
    result = lint()
    bad = [m for m in result["Messages"] if m["Severity"] >= 2]
    assert not bad and not result["Errors"], result


def test_lint_catches_a_broken_template(tmp_path):
    broken = tmp_path / "gremesh"
    shutil.copytree(CHART, broken)
    with open(broken / "templates" / "service.yaml", "a") as f:
        f.write("{{ if }}\n")
    old, helm.CHART = helm.CHART, broken
    try:
        result = lint()
    finally:
        helm.CHART = old
    assert any(m["Severity"] == 3 and m["Path"] == "templates/" for m in result["Messages"])


def test_every_manifest_is_valid_for_kubernetes_1_32(rendering):
    name, _, rendered = rendering
    assert rendered.docs, name
    for doc in rendered.docs:
        if doc["apiVersion"] == "monitoring.coreos.com/v1":
            continue  # no schema offline; checked in test_service_monitor
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


def test_namespaced_objects_name_their_namespace(rendering):
    _, values, rendered = rendering
    for doc in rendered.docs:
        if doc["kind"] in {"CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"}:
            assert "namespace" not in doc["metadata"]
        else:
            assert doc["metadata"]["namespace"] in {NAMESPACE, values.get("watchNamespace")}


# ------------------------------------------------------------------ the operator pod


def test_hardened_by_default():
    pod = render().one("Deployment")["spec"]["template"]["spec"]
    sc = pod["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["runAsUser"] == 65532 and sc["runAsGroup"] == 65532
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    c = pod["containers"][0]["securityContext"]
    assert c["readOnlyRootFilesystem"] is True
    assert c["allowPrivilegeEscalation"] is False
    assert c["capabilities"] == {"drop": ["ALL"]}
    assert c["seccompProfile"] == {"type": "RuntimeDefault"}
    assert c.get("privileged") is False and "add" not in c["capabilities"]
    assert pod["automountServiceAccountToken"] is True
    # /tmp is the only writable place: an emptyDir, in memory so keys never reach a disk.
    mounts = pod["containers"][0]["volumeMounts"]
    assert [m["mountPath"] for m in mounts] == ["/tmp"]
    assert pod["volumes"] == [{"name": mounts[0]["name"],
                               "emptyDir": {"medium": "Memory", "sizeLimit": "32Mi"}}]
    assert not pod.get("hostNetwork") and not pod.get("hostPID")
    resources = pod["containers"][0]["resources"]
    assert resources["requests"] == {"cpu": "50m", "memory": "64Mi"}
    assert resources["limits"] == {"memory": "256Mi"}


def test_service_account_token_only_where_asked():
    sa = render().one("ServiceAccount")
    assert sa["automountServiceAccountToken"] is False


def test_operator_arguments_and_environment():
    c = operator_container(render())
    assert c["args"] == ["operator", "--listen=0.0.0.0:8080", "--resync=60s",
                         "--connect-timeout=10s", "--command-timeout=60s", "--log-json"]
    env = {e["name"]: e for e in c["env"]}
    assert env["GREMESH_LOG"]["value"] == "info"
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert c["ports"] == [{"name": "metrics", "containerPort": 8080, "protocol": "TCP"}]


def test_values_reach_the_arguments():
    r = render({"watchNamespace": WATCHED, "resync": "5m", "log": {"format": "text",
               "level": "debug"}, "ssh": {"connectTimeout": "3s", "commandTimeout": "2m"},
                "metrics": {"port": 9090}})
    c = operator_container(r)
    assert c["args"] == ["operator", "--listen=0.0.0.0:9090", "--resync=5m",
                         "--connect-timeout=3s", "--command-timeout=2m",
                         f"--namespace={WATCHED}"]
    assert {e["name"]: e.get("value") for e in c["env"]}["GREMESH_LOG"] == "debug"
    assert c["ports"][0]["containerPort"] == 9090


@pytest.mark.parametrize("values, on", [
    ({}, False),
    ({"replicaCount": 2}, True),
    ({"leaderElection": {"enabled": True}}, True),
    ({"replicaCount": 2, "leaderElection": {"enabled": None}}, True),
])
def test_leader_election(values, on):
    r = render(values)
    deployment = r.one("Deployment")
    args = operator_container(r)["args"]
    fullname = deployment["metadata"]["name"]
    assert ("--leader-election" in args) is on
    if on:
        assert f"--lease-name={fullname}" in args and "--lease-duration=15s" in args
        assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
        assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    else:
        assert deployment["spec"]["strategy"] == {"type": "Recreate"}
        assert not any(d["metadata"]["name"].endswith("-leader-election") for d in r.docs)


def test_two_replicas_without_leader_election_are_refused():
    with pytest.raises(helm.helm_sdkpy.HelmError, match="leaderElection"):
        render({"replicaCount": 2, "leaderElection": {"enabled": False}})


def test_the_binary_accepts_the_rendered_arguments(tmp_path):
    """Runs the gremesh binary with the Deployment's arguments and environment: clap must
    accept every flag and value; the run then stops at the missing cluster."""
    binary = next((p for p in (os.environ.get("GREMESH_BIN"), ROOT / "target/release/gremesh",
                               ROOT / "target/debug/gremesh") if p and Path(p).exists()), None)
    if binary is None:
        pytest.skip("no gremesh binary built")
    r = render(COMBINATIONS["everything"])
    c = operator_container(r)
    env = {"PATH": os.environ["PATH"], "KUBECONFIG": str(tmp_path / "absent"),
           "HOME": str(tmp_path), "POD_NAME": "gremesh-0", "POD_NAMESPACE": NAMESPACE}
    env.update({e["name"]: e["value"] for e in c["env"] if "value" in e})
    res = subprocess.run([str(binary), *c["args"]], env=env, capture_output=True, text=True,
                         timeout=30)
    assert res.returncode != 0
    assert "Usage:" not in res.stderr and "unexpected argument" not in res.stderr, res.stderr
    assert "invalid value" not in res.stderr, res.stderr
    # It got past argument parsing: the failure is about the (absent) cluster.
    assert re.search(r"kube|config|cluster", res.stderr, re.I), res.stderr


# ------------------------------------------------------------------ RBAC


def test_rbac_grants_exactly_what_the_operator_uses_cluster_wide():
    r = render()
    assert not r.of_kind("Role") and not r.of_kind("RoleBinding")
    role = r.one("ClusterRole")
    assert triples(role["rules"]) == WATCHED_RULES
    assert all("resourceNames" not in rule for rule in role["rules"])
    binding = r.one("ClusterRoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io",
                                  "kind": "ClusterRole", "name": role["metadata"]["name"]}
    sa = r.one("ServiceAccount")["metadata"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["name"],
                                    "namespace": NAMESPACE}]


def test_rbac_in_one_namespace_is_a_role_there():
    r = render({"watchNamespace": WATCHED})
    assert not r.of_kind("ClusterRole") and not r.of_kind("ClusterRoleBinding")
    role = r.one("Role")
    assert role["metadata"]["namespace"] == WATCHED
    assert triples(role["rules"]) == WATCHED_RULES
    binding = r.one("RoleBinding")
    assert binding["metadata"]["namespace"] == WATCHED
    assert binding["roleRef"]["kind"] == "Role"
    assert binding["subjects"][0]["namespace"] == NAMESPACE


@pytest.mark.parametrize("values", [{"replicaCount": 2},
                                    {"replicaCount": 2, "watchNamespace": WATCHED}])
def test_rbac_lease_role_only_in_the_release_namespace(values):
    r = render(values)
    lease_roles = [d for d in r.of_kind("Role")
                   if d["metadata"]["name"].endswith("-leader-election")]
    assert len(lease_roles) == 1
    role = lease_roles[0]
    assert role["metadata"]["namespace"] == NAMESPACE
    assert triples(role["rules"]) == LEASE_RULES
    lease = r.one("Deployment")["metadata"]["name"]
    for rule in role["rules"]:
        if rule["verbs"] != ["create"]:  # create cannot be limited by name
            assert rule["resourceNames"] == [lease]
    other = [d for d in r.of_kind("Role") + r.of_kind("ClusterRole") if d is not role]
    assert len(other) == 1 and triples(other[0]["rules"]) == WATCHED_RULES
    binding = [d for d in r.of_kind("RoleBinding")
               if d["roleRef"]["name"] == role["metadata"]["name"]]
    assert len(binding) == 1 and binding[0]["metadata"]["namespace"] == NAMESPACE


def test_rbac_nothing_but_the_listed_rules(rendering):
    """No other (Cluster)Role exists in any combination, and none grants a wildcard."""
    _, _, r = rendering
    allowed = WATCHED_RULES | LEASE_RULES
    for role in r.of_kind("Role") + r.of_kind("ClusterRole"):
        got = triples(role["rules"])
        assert got <= allowed, got - allowed
        assert not any("*" in t for t in got)


def test_rbac_secret_names_narrow_secret_reads():
    r = render({"rbac": {"secretNames": ["gremesh-ssh", "other-key"]}})
    rules = [x for x in r.one("ClusterRole")["rules"] if "secrets" in x["resources"]]
    assert rules == [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"],
                      "resourceNames": ["gremesh-ssh", "other-key"]}]


def test_rbac_off_renders_no_rbac():
    r = render({"rbac": {"create": False}, "replicaCount": 2})
    for kind in ("Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"):
        assert not r.of_kind(kind)


# ------------------------------------------------------------------ values and schema


@pytest.mark.parametrize("values, field", [
    ({"bogus": 1}, "bogus"),
    ({"metrics": {"serviceMonitor": {"enable": True}}}, "enable"),
    ({"securityContext": {"runAsRoot": True}}, "runAsRoot"),
    ({"affinity": {"podAntiAffinity": {"preferred": []}}}, "preferred"),
])
def test_schema_rejects_unknown_keys(values, field):
    with pytest.raises(helm.helm_sdkpy.HelmError, match=f"additional properties '{field}'"):
        render(values)


@pytest.mark.parametrize("values", [
    {"log": {"format": "xml"}},
    {"resync": "60"},
    {"watchNamespace": "Not_A_Namespace"},
    {"replicaCount": "2"},
    {"image": {"pullPolicy": "Sometimes"}},
    {"leaderElection": {"enabled": "yes"}},
])
def test_schema_rejects_wrong_values(values):
    with pytest.raises(helm.helm_sdkpy.HelmError, match="schema"):
        render(values)


def _object_nodes(node, path="$"):
    if isinstance(node, dict):
        if node.get("type") == "object" or "properties" in node:
            yield path, node
        for k, v in node.items():
            yield from _object_nodes(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _object_nodes(v, f"{path}[{i}]")


def test_schema_closes_every_object():
    """Every object in values.schema.json either lists its keys (additionalProperties false)
    or is a map whose values are typed; none leaves unknown keys open."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    nodes = list(_object_nodes(schema))
    assert len(nodes) > 30
    for path, node in nodes:
        extra = node.get("additionalProperties")
        if "properties" in node:
            assert extra is False, path
        else:
            assert isinstance(extra, dict) and extra, path


def test_schema_matches_values_yaml():
    """values.yaml and the schema describe the same keys (no undocumented value)."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def walk(vals, sch, path):
        props = sch.get("properties")
        if props is None or not isinstance(vals, dict):
            return
        assert set(vals) <= set(props), f"{path}: {set(vals) - set(props)} not in schema"
        for k, v in vals.items():
            walk(v, props[k], f"{path}.{k}")

    walk(values, schema, "values")
    assert set(values) == set(schema["properties"])


def test_every_value_has_a_comment():
    """Each key in values.yaml has a comment line right above it (or at its end)."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    key = re.compile(r"^\s*([A-Za-z][\w.-]*):(\s|$)")
    missing = []
    for i, line in enumerate(lines):
        if not key.match(line):
            continue
        above = lines[i - 1].strip() if i else ""
        if not (above.startswith("#") or " #" in line):
            missing.append(f"{i + 1}: {line.strip()}")
    assert not missing, "values without a comment:\n" + "\n".join(missing)
    assert sum(1 for line in lines if key.match(line)) >= 50


# ------------------------------------------------------------------ CRDs


def test_chart_crds_are_a_copy_of_crds_gremesh_yaml():
    chart_copy = (CHART / "files" / "crds.yaml").read_bytes()
    original = (ROOT / "crds" / "gremesh.yaml").read_bytes()
    assert chart_copy == original, (
        "charts/gremesh/files/crds.yaml differs from crds/gremesh.yaml; "
        "run: cp crds/gremesh.yaml charts/gremesh/files/crds.yaml")


def test_rendered_crds_equal_crds_gremesh_yaml_and_are_kept():
    expected = [d for d in yaml.safe_load_all((ROOT / "crds" / "gremesh.yaml").read_text()) if d]
    r = render({"crds": {"install": True}})
    got = r.of_kind("CustomResourceDefinition")
    assert sorted(d["metadata"]["name"] for d in got) == sorted(
        d["metadata"]["name"] for d in expected)
    by_name = {d["metadata"]["name"]: d for d in got}
    for crd in expected:
        rendered = by_name[crd["metadata"]["name"]]
        meta = dict(rendered["metadata"])
        assert meta.pop("annotations") == {
            "helm.sh/resource-policy": "keep",
            "argocd.argoproj.io/sync-options": "Delete=false,Prune=false"}
        assert meta.pop("labels")["app.kubernetes.io/managed-by"] == "Helm"
        assert {**rendered, "metadata": meta} == crd


def test_crds_are_opt_in():
    assert not render().of_kind("CustomResourceDefinition")
    assert not render({"crds": {"install": False}}).of_kind("CustomResourceDefinition")


def test_crd_template_refuses_an_unexpected_file(tmp_path):
    chart = tmp_path / "gremesh"
    shutil.copytree(CHART, chart)
    text = (chart / "files" / "crds.yaml").read_text()
    (chart / "files" / "crds.yaml").write_text(
        text.replace("metadata:\n  name:", "metadata:\n  labels: {}\n  name:", 1))
    old, helm.CHART = helm.CHART, chart
    try:
        with pytest.raises(helm.helm_sdkpy.HelmError, match="files/crds.yaml"):
            render({"crds": {"install": True}})
    finally:
        helm.CHART = old


# ------------------------------------------------------------------ metrics


def test_metrics_service_selects_the_operator_pods():
    r = render()
    svc = r.one("Service")
    pod_labels = r.one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    assert svc["spec"]["ports"] == [{"name": "metrics", "port": 8080, "targetPort": "metrics",
                                     "protocol": "TCP"}]
    assert not r.of_kind("ServiceMonitor")


def test_service_monitor():
    r = render({"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}}})
    sm = r.one("ServiceMonitor")
    svc = r.one("Service")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["labels"]["release"] == "prom"
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert sm["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert sm["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics",
                                        "interval": "30s", "scrapeTimeout": "10s"}]
    assert set(sm) == {"apiVersion", "kind", "metadata", "spec"}
    assert set(sm["spec"]) == {"namespaceSelector", "selector", "endpoints"}


# ------------------------------------------------------------------ SSH key Secret


def test_no_secret_by_default():
    assert not render().of_kind("Secret")


def test_ssh_key_secret_from_values_is_never_shown():
    r = render({"sshKeySecret": {"create": True, "privateKey": DUMMY_KEY},
                "watchNamespace": WATCHED})
    secret = r.one("Secret")
    assert secret["metadata"]["namespace"] == WATCHED
    assert secret["metadata"]["name"] == "gremesh-ssh"
    assert base64.b64decode(secret["data"]["ssh-privatekey"]).decode() == DUMMY_KEY + "\n"
    assert "PRIVATE KEY" not in r.notes and "c2VjcmV0" not in r.notes
    assert "stored in this release" in r.notes


@pytest.mark.parametrize("bad", ["", "ssh-ed25519 AAAAC3Nza-public-key-not-private",
                                 "-----BEGIN OPENSSH PRIVATE KEY-----\ntruncated-secret-xyz"])
def test_ssh_key_secret_rejects_a_non_key_without_echoing_it(bad):
    with pytest.raises(helm.helm_sdkpy.HelmError) as err:
        render({"sshKeySecret": {"create": True, "privateKey": bad}})
    assert "not an OpenSSH or PEM private key" in str(err.value)
    assert not bad or bad.split()[-1] not in str(err.value)


# ------------------------------------------------------------------ Argo CD friendliness


def test_rendering_is_deterministic():
    """The same values give byte-identical manifests: nothing random or time-dependent that
    would keep an Argo CD application OutOfSync."""
    values = {**COMBINATIONS["everything"], "sshKeySecret": {"create": True,
                                                             "privateKey": DUMMY_KEY}}
    assert render(values, release="same").manifest == render(values, release="same").manifest
    forbidden = re.compile(r"\b(rand\w*|uuidv4|now|date\w*|genCA|genPrivateKey|"
                           r"genSelfSignedCert|genSignedCert|lookup|htpasswd)\b")
    for template in (CHART / "templates").iterdir():
        assert not forbidden.search(template.read_text()), template.name


def test_quantities_are_canonical(rendering):
    """Quantities as the API server prints them back (50m, 64Mi), so diffs stay empty."""
    _, _, r = rendering
    c = operator_container(r)
    for group in c.get("resources", {}).values():
        for q in group.values():
            assert re.fullmatch(r"[1-9][0-9]*(m|Ki|Mi|Gi)?", str(q)), q
