#!/usr/bin/env bash
# The demo (README, first command): builds gremesh, brings up a 3-host lab (each host a network
# namespace with its own sshd and dockerd), starts one container per host, converges the mesh in
# examples/lab-vxlan-mesh.yaml over SSH, and shows web-a pinging web-b and web-c across it.
# Needs root. `tests/lab/lab.sh down` removes the lab afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --quiet
bin=${CARGO_TARGET_DIR:-target}/debug/gremesh
tests/lab/lab.sh up 3 >/dev/null
for h in a b c; do tests/lab/lab.sh run "host-$h" "web-$h" >/dev/null; done

echo "== gremesh apply -f /run/gremesh-lab/hosts.yaml -f examples/lab-vxlan-mesh.yaml"
"$bin" apply -f /run/gremesh-lab/hosts.yaml -f examples/lab-vxlan-mesh.yaml

for peer in "web-b 10.10.2.10" "web-c 10.10.3.10"; do
  set -- $peer
  echo "== web-a (host-a) → $1 ($2)"
  tests/lab/lab.sh sh host-a docker exec web-a ping -c 3 "$2"
done
echo "== again: nothing to change"
"$bin" apply -f /run/gremesh-lab/hosts.yaml -f examples/lab-vxlan-mesh.yaml
