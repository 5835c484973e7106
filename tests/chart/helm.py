"""The real Helm engine (helm-sdkpy, Helm 4 as a library) for the chart tests.

helm-sdkpy has no `helm template`; `render` runs Helm's install action against
fake_apiserver.FakeApiServer instead and returns the manifest Helm rendered and the NOTES.
Values are passed as a dict, which is what `--set`/`-f` turn into, so a value the schema
rejects fails here exactly as `helm install --set` would.
"""

import asyncio
import atexit
import itertools
import os
import shutil
import tempfile
from pathlib import Path

import yaml

# Helm's own directories (registry config, cache) go to a throwaway place, set before the
# Go library is loaded: it reads the environment once.
_HOME = tempfile.mkdtemp(prefix="gremesh-chart-helm-")
atexit.register(shutil.rmtree, _HOME, ignore_errors=True)
for _var, _sub in (("HELM_CACHE_HOME", "cache"), ("HELM_CONFIG_HOME", "config"),
                   ("HELM_DATA_HOME", "data")):
    os.environ[_var] = os.path.join(_HOME, _sub)

import helm_sdkpy  # noqa: E402  (after the environment above)

from fake_apiserver import FakeApiServer  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "gremesh"
NAMESPACE = "gremesh-system"

_server = None
_releases = itertools.count(1)


def _config(namespace):
    global _server
    if _server is None:
        _server = FakeApiServer()
    return helm_sdkpy.Configuration(namespace=namespace, kubeconfig=_server.kubeconfig())


class Rendered:
    """One rendering: the manifest text, its documents, and the NOTES."""

    def __init__(self, manifest, notes):
        self.manifest = manifest
        self.notes = notes or ""
        self.docs = [d for d in yaml.safe_load_all(manifest) if d]

    def of_kind(self, kind):
        return [d for d in self.docs if d["kind"] == kind]

    def one(self, kind):
        found = self.of_kind(kind)
        assert len(found) == 1, f"expected one {kind}, got {len(found)}"
        return found[0]


def render(values=None, release=None, namespace=NAMESPACE):
    """Renders the chart with `values` (a dict, like --set); raises helm_sdkpy.HelmError."""
    release = release or f"gm{next(_releases)}"
    install = helm_sdkpy.Install(_config(namespace))
    result = asyncio.run(install.run(release, str(CHART), values=values, wait=False))
    return Rendered(result["manifest"], result.get("info", {}).get("notes"))


def lint():
    """Helm's lint action on the chart; returns its result dict."""
    return asyncio.run(helm_sdkpy.Lint(_config(NAMESPACE)).run(str(CHART)))
