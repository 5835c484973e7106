#!/usr/bin/env bash
# The VM lab suite in one command: bring up three QEMU guests (Debian's kernel, real GRE),
# run tests/vm/test_gretap.py against them with gremesh, take the lab down again.
# Exits non-zero when the lab does not come up or a test fails. Needs root.
#
#   tests/vm/run.sh                 # the suite (pytest arguments may follow, e.g. -k s13)
#   KEEP_VMLAB=1 tests/vm/run.sh    # leave the guests running afterwards
#
# The gremesh binary: $GREMESH_BIN, else debug/gremesh under $CARGO_TARGET_DIR or target/
# (built with cargo if missing).
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
target_dir=${CARGO_TARGET_DIR:-target}
[[ $target_dir == /* ]] || target_dir=$PWD/$target_dir
export GREMESH_BIN=${GREMESH_BIN:-$target_dir/debug/gremesh}
t0=$SECONDS

if [[ ! -x $GREMESH_BIN ]]; then
  echo "== building gremesh (no $GREMESH_BIN)"
  cargo build --quiet || exit 1
fi
if ! python3 -c 'import pytest' 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore pytest ||
    exit 1
fi

if [[ ${KEEP_VMLAB:-0} != 1 ]]; then
  trap 'tests/vm/vmlab.sh down >/dev/null 2>&1 || true' EXIT
fi

echo "== VM lab up"
tests/vm/vmlab.sh up 3 </dev/null || exit 1
up=$((SECONDS - t0))

echo "== gretap suite"
python3 -m pytest tests/vm -v -p no:cacheprovider "$@" </dev/null
rc=$?
echo "== VM lab: up ${up}s, total $((SECONDS - t0))s (pytest exit $rc)"
exit "$rc"
