#!/usr/bin/env bash
# Installs what the test suite needs beyond the Rust toolchain, when it is missing:
# Debian packages for probing containers (iputils ping, tcpdump), and from PyPI pytest and
# the packages of the Kubernetes API stand-in (tests/kube/requirements.txt).
# The lab (tests/lab/lab.sh) installs its own packages (docker.io, openssh-server, ...).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v ping >/dev/null 2>&1 || missing+=(iputils-ping)
command -v tcpdump >/dev/null 2>&1 || missing+=(tcpdump)
command -v nsenter >/dev/null 2>&1 || missing+=(util-linux)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v dot >/dev/null 2>&1 || missing+=(graphviz)
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null 2>&1 \
    || { apt-get update >/dev/null && apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null; }
fi
# pytest, and the Kubernetes API stand-in's packages (kmock registers a pytest plugin that
# imports pytest_asyncio, so that comes too).
python3 -c 'import pytest, pytest_asyncio, kmock, aiohttp, jsonpatch, yaml' 2>/dev/null \
  || python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
       -r tests/kube/requirements.txt pytest-asyncio
