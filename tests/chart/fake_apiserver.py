"""Just enough of a Kubernetes API server for Helm's install action to render a chart.

helm-sdkpy exposes Helm's install and lint actions but not `helm template`. An install
with Helm's in-memory release storage (HELM_DRIVER=memory) needs a cluster only for
discovery (the server version, which API groups and kinds exist) and for creating the
rendered objects. This server answers exactly that: discovery for the kinds the chart may
render, 404 for every GET of a named object (nothing exists yet), an empty list for every
list, and 201 with the object echoed back for every create. The manifest Helm rendered comes
back in the install result, so the tests read the real engine's output.

It binds to 127.0.0.1 on a free port and serves until `stop()`. Run as a program
(`python3 fake_apiserver.py PORTFILE`) it serves until killed and writes its port to
PORTFILE; tests/image uses that to start the operator image with the chart's arguments.
"""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

KUBE_VERSION = {
    "major": "1", "minor": "32", "gitVersion": "v1.32.4", "gitCommit": "fake",
    "gitTreeState": "clean", "buildDate": "2025-01-01T00:00:00Z", "goVersion": "go1.23",
    "compiler": "gc", "platform": "linux/amd64",
}

# group/version -> [(plural, kind, namespaced)]
RESOURCES = {
    "v1": [
        ("namespaces", "Namespace", False),
        ("serviceaccounts", "ServiceAccount", True),
        ("services", "Service", True),
        ("secrets", "Secret", True),
        ("configmaps", "ConfigMap", True),
        ("pods", "Pod", True),
        ("events", "Event", True),
    ],
    "apps/v1": [("deployments", "Deployment", True)],
    "rbac.authorization.k8s.io/v1": [
        ("roles", "Role", True),
        ("rolebindings", "RoleBinding", True),
        ("clusterroles", "ClusterRole", False),
        ("clusterrolebindings", "ClusterRoleBinding", False),
    ],
    "apiextensions.k8s.io/v1": [
        ("customresourcedefinitions", "CustomResourceDefinition", False),
    ],
    "coordination.k8s.io/v1": [("leases", "Lease", True)],
    "events.k8s.io/v1": [("events", "Event", True)],
    "monitoring.coreos.com/v1": [("servicemonitors", "ServiceMonitor", True)],
    "gremesh.io/v1alpha1": [
        ("dockerhosts", "DockerHost", True),
        ("gremeshes", "GreMesh", True),
        ("containerattachments", "ContainerAttachment", True),
    ],
}

VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]


def _resource_list(group_version):
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": [
            {"name": plural, "singularName": kind.lower(), "namespaced": namespaced,
             "kind": kind, "verbs": VERBS}
            for plural, kind, namespaced in RESOURCES[group_version]
        ],
    }


def _group_list():
    groups = {}
    for gv in RESOURCES:
        if "/" in gv:
            group, version = gv.split("/")
            groups.setdefault(group, []).append(version)
    return {
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [
            {"name": g, "versions": [{"groupVersion": f"{g}/{v}", "version": v} for v in vs],
             "preferredVersion": {"groupVersion": f"{g}/{vs[0]}", "version": vs[0]}}
            for g, vs in groups.items()
        ],
    }


def _status(code, reason, message):
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


class _Handler(BaseHTTPRequestHandler):
    server_version = "fake-apiserver"

    def log_message(self, *args):  # keep test output quiet
        pass

    def _send(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _group_version(self, parts):
        """Splits /api/v1/... or /apis/G/V/... into (group/version, rest)."""
        if parts[:1] == ["api"] and len(parts) >= 2:
            return parts[1], parts[2:]
        if parts[:1] == ["apis"] and len(parts) >= 3:
            return f"{parts[1]}/{parts[2]}", parts[3:]
        return None, []

    def do_GET(self):  # noqa: N802 (http.server naming)
        path = self.path.split("?")[0].strip("/")
        parts = path.split("/") if path else []
        self.server.requests.append(("GET", self.path))
        if path == "version":
            return self._send(200, KUBE_VERSION)
        if path == "api":
            return self._send(200, {"kind": "APIVersions", "versions": ["v1"],
                                    "serverAddressByClientCIDRs": []})
        if path == "apis":
            return self._send(200, _group_list())
        gv, rest = self._group_version(parts)
        if gv is None or gv not in RESOURCES:
            return self._send(404, _status(404, "NotFound", f"no route {self.path}"))
        if not rest:
            return self._send(200, _resource_list(gv))
        if rest[0] == "namespaces" and len(rest) >= 3:
            rest = rest[2:]
        if len(rest) == 1:  # a list: nothing exists
            kind = next((k for p, k, _ in RESOURCES[gv] if p == rest[0]), "Unknown")
            return self._send(200, {"kind": f"{kind}List", "apiVersion": gv,
                                    "metadata": {"resourceVersion": "1"}, "items": []})
        return self._send(404, _status(404, "NotFound", f"{'/'.join(rest)} not found"))

    def do_POST(self):  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        self.server.requests.append((self.command, self.path))
        parts = self.path.split("?")[0].strip("/").split("/")
        gv, rest = self._group_version(parts)
        if "json" not in (self.headers.get("Content-Type") or ""):
            # Helm's release record (a Secret, sent as protobuf): acknowledge it; the tests
            # read the manifest from the install result, not from the record.
            kind = next((k for p, k, _ in RESOURCES.get(gv, []) if p in rest), "Unknown")
            name = rest[-1] if self.command == "PUT" else "release-record"
            return self._send(201, {"kind": kind, "apiVersion": gv,
                                    "metadata": {"name": name, "resourceVersion": "1"}})
        body = json.loads(raw or b"{}")
        meta = body.setdefault("metadata", {})
        meta.setdefault("uid", f"00000000-0000-0000-0000-{len(self.server.requests):012d}")
        meta.setdefault("resourceVersion", str(len(self.server.requests)))
        meta.setdefault("creationTimestamp", "2025-01-01T00:00:00Z")
        self.server.created.append(body)
        return self._send(201, body)

    def do_PUT(self):  # noqa: N802
        return self.do_POST()

    def do_PATCH(self):  # noqa: N802
        return self._send(404, _status(404, "NotFound", "nothing exists here"))

    def do_DELETE(self):  # noqa: N802
        return self._send(404, _status(404, "NotFound", "nothing exists here"))


class _Server(ThreadingHTTPServer):
    # Helm fetches discovery in parallel; the default backlog of 5 drops connections, which
    # then wait a second for the SYN retransmit.
    request_queue_size = 128
    daemon_threads = True


class FakeApiServer:
    """Serves on 127.0.0.1:<free port> in a background thread."""

    def __init__(self):
        self.httpd = _Server(("127.0.0.1", 0), _Handler)
        self.httpd.requests = []
        self.httpd.created = []
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    @property
    def created(self):
        return self.httpd.created

    def kubeconfig(self):
        """A kubeconfig (YAML text) pointing at this server, without credentials."""
        return (
            "apiVersion: v1\nkind: Config\n"
            f"clusters:\n- name: fake\n  cluster:\n    server: {self.url}\n"
            "contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: nobody\n"
            "users:\n- name: nobody\n  user: {}\n"
            "current-context: fake\n"
        )

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


if __name__ == "__main__":
    import os
    import sys

    server = FakeApiServer()
    with open(sys.argv[1] + ".tmp", "w") as f:
        f.write(str(server.httpd.server_address[1]))
    os.replace(sys.argv[1] + ".tmp", sys.argv[1])
    server.thread.join()
