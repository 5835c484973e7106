#!/usr/bin/env bash
# Tests of what deploys gremesh: the Helm chart (tests/chart: real Helm engine, Kubernetes
# 1.32 schemas, RBAC, values schema), the Argo CD health checks and examples (tests/argocd:
# lua5.1), and the operator image (tests/image/test.sh: debootstrap base, docker build and
# runs on a lab host's engine).
#
# Run as root on Debian 12. Installs what it is missing: lua5.1, debootstrap and binutils from
# Debian, tests/chart/requirements.txt from PyPI. The image test uses the lab if it is up and
# otherwise brings three hosts up and down itself; SKIP_IMAGE=1 leaves it out.
#
# The last line is "N passed, M failed" over all three; the exit status is 0 only when
# nothing failed.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
export DEBIAN_FRONTEND=noninteractive

log() { printf '[deploy] %s\n' "$*" >&2; }

# ------------------------------------------------------------------ dependencies

missing=()
command -v lua5.1 >/dev/null || missing+=(lua5.1)
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v strip >/dev/null || missing+=(binutils)
if ((${#missing[@]})); then
  log "installing ${missing[*]}"
  install() { apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null 2>&1; }
  install || { apt-get update >/dev/null 2>&1; install; } || log "apt-get install failed"
fi
if ! python3 -c 'import helm_sdkpy, kubernetes_validate, jsonschema, yaml, pytest' 2>/dev/null; then
  log "installing tests/chart/requirements.txt"
  # helm-sdkpy declares Python >= 3.12 but works on Debian 12's 3.11.
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    --ignore-requires-python -r tests/chart/requirements.txt ||
    log "pip install -r tests/chart/requirements.txt failed"
fi

# ------------------------------------------------------------------ suites

passed=0
failed=0
skipped=0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

log "chart and Argo CD tests"
# kmock (tests/kube) registers a pytest plugin; these suites do not use it.
python3 -m pytest tests/chart tests/argocd -p no:cacheprovider -p no:kmock -q \
  --junitxml="$work/junit.xml"
rc=$?
if [[ -s $work/junit.xml ]]; then
  read -r p f s < <(python3 - "$work/junit.xml" <<'PY'
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
total = sum(int(s.get("tests", 0)) for s in suites)
bad = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
skip = sum(int(s.get("skipped", 0)) for s in suites)
print(total - bad - skip, bad, skip)
PY
  )
  passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + s))
fi
# pytest failing without a failed test (collection or usage error) still counts as a failure
if ((rc != 0)) && [[ ! -s $work/junit.xml || ${f:-0} == 0 ]]; then failed=$((failed + 1)); fi

if [[ ${SKIP_IMAGE:-0} == 1 ]]; then
  log "image test skipped (SKIP_IMAGE=1)"
  skipped=$((skipped + 1))
else
  log "image test"
  tests/image/test.sh | tee "$work/image.out"
  rc=${PIPESTATUS[0]}
  line=$(tail -n 1 "$work/image.out")
  if [[ $line =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed$ ]]; then
    passed=$((passed + BASH_REMATCH[1])); failed=$((failed + BASH_REMATCH[2]))
    if ((rc != 0 && BASH_REMATCH[2] == 0)); then failed=$((failed + 1)); fi
  else
    failed=$((failed + 1))
  fi
fi

if ((skipped)); then
  printf '%d passed, %d failed, %d skipped\n' "$passed" "$failed" "$skipped"
else
  printf '%d passed, %d failed\n' "$passed" "$failed"
fi
((failed == 0))
