#!/usr/bin/env bash
# The operator image, proven without a registry: a minimal Debian bookworm base made with
# debootstrap (OpenSSH client included) is imported into lab host-a's Docker engine, the
# repository's Dockerfile is built there FROM it with a prebuilt gremesh binary, and the image
# is run the way the Helm chart runs it (uid 65532, read-only root, tmpfs /tmp, no
# capabilities): --version, `gremesh crd`, a `gremesh apply` of a VXLAN mesh over three lab
# hosts (checked with pings across the mesh and a second apply that changes nothing), and
# `gremesh operator` with the arguments and environment the chart renders, against a minimal
# API stand-in, until its /healthz, /readyz and /metrics answer.
#
# Needs root. Uses the lab when it exists (tests/run starts it) and leaves it as it was; when
# there is no lab at all it brings up three hosts itself and takes them down at the end. Its
# mesh, containers and images have their own names (imgtest*) and are removed at the end.
#
# Environment:
#   GREMESH_BIN          binary to put in the image (default: the newer of target/release
#                        and target/debug gremesh; debug info is stripped for the image)
#   GREMESH_IMAGE_CACHE  where the debootstrapped base is kept between runs
#                        (default /var/cache/gremesh-image; delete it to start cold)
#   KEEP_IMAGE=1         leave the images on host-a's engine
#
# Prints one line per check and ends with "N passed, M failed"; exits 1 if any failed.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
LAB=$ROOT/tests/lab/lab.sh
STATE=${GREMESH_LAB_STATE:-/run/gremesh-lab}
CACHE=${GREMESH_IMAGE_CACHE:-/var/cache/gremesh-image}
SUITE=bookworm
PACKAGES=openssh-client,ca-certificates
BUILD_HOST=host-a
HOSTS=(host-a host-b host-c)
BASE_IMAGE=gremesh-imgtest-base:$SUITE
IMAGE=gremesh-imgtest:latest
MESH=imgtest
T0=$SECONDS

passed=0
failed=0
log() { printf '[image] %s\n' "$*" >&2; }
ok() { passed=$((passed + 1)); printf 'PASS %s\n' "$1"; }
bad() { # bad NAME [DETAIL]
  failed=$((failed + 1))
  printf 'FAIL %s\n' "$1"
  [[ -z ${2:-} ]] || printf '%s\n' "$2" | sed 's/^/     /'
}
finish() {
  printf '%s passed, %s failed\n' "$passed" "$failed"
  ((failed == 0))
}
abort() { finish || true; exit 1; }
on() { local h=$1; shift; "$LAB" sh "$h" "$@"; }
dk() { on "$BUILD_HOST" docker "$@"; }

# ------------------------------------------------------------------ lab

brought_up=0
work=$(mktemp -d /tmp/gremesh-imgtest.XXXXXX)
cleanup() {
  set +e
  [[ -z ${api_pid:-} ]] || kill "$api_pid" 2>/dev/null
  if [[ -e /var/run/netns/gmlab-host-a ]]; then
    local h
    for h in "${HOSTS[@]}"; do
      on "$h" docker rm -f "$MESH-${h#host-}" >/dev/null 2>&1
      # every device this test's mesh made (their alias starts with gremesh:imgtest:)
      on "$h" ip -j -d link show 2>/dev/null | python3 -c '
import json, sys
for link in json.load(sys.stdin):
    if link.get("ifalias", "").startswith("gremesh:'"$MESH"':"):
        print(link["ifname"])' | while read -r dev; do
        on "$h" ip link del dev "$dev" 2>/dev/null
      done
    done
    dk rm -f "$MESH-operator" >/dev/null 2>&1
    if [[ ${KEEP_IMAGE:-0} != 1 ]]; then
      dk rmi -f "$IMAGE" "$BASE_IMAGE" >/dev/null 2>&1
    fi
  fi
  if ((brought_up)); then
    log "taking down the lab this test brought up"
    "$LAB" down >/dev/null 2>&1
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# Only a lab that is entirely absent is this test's to bring up and take down; one that
# exists, even partly or while a host restarts, belongs to someone else and is left alone.
if [[ ! -d $STATE ]] && ! compgen -G '/var/run/netns/gmlab-*' >/dev/null; then
  log "lab is not up: bringing up ${#HOSTS[@]} hosts (taken down again at the end)"
  brought_up=1
  "$LAB" up "${#HOSTS[@]}" >/dev/null
fi
for h in "${HOSTS[@]}"; do
  [[ -e /var/run/netns/gmlab-$h ]] || { bad "lab host $h is up"; abort; }
done

# ------------------------------------------------------------------ base image

# The mirror apt already uses here (deb822 or one-line sources), else Debian's own.
mirror() {
  local uri
  uri=$(awk '/^URIs:/ {u=$2} /^Suites:/ && / '"$SUITE"'( |$)/ && u {print u; exit}' \
    /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
  [[ -n $uri ]] || uri=$(awk '$1 == "deb" && $3 == "'"$SUITE"'" {print $2; exit}' \
    /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true)
  printf '%s' "${uri:-http://deb.debian.org/debian}"
}

# unmounts anything debootstrap may have left mounted below a directory
unmount_below() {
  local mp
  awk -v d="$1" 'index($5, d "/") == 1 {print $5}' /proc/self/mountinfo | sort -r |
    while read -r mp; do umount -l "$mp" 2>/dev/null || true; done
}

base_tar=$CACHE/$SUITE-minbase-${PACKAGES//,/-}.tar
if [[ -s $base_tar ]]; then
  log "base rootfs: cached $base_tar"
else
  command -v debootstrap >/dev/null || {
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends debootstrap \
      >/dev/null 2>&1 || { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive \
      apt-get install -y --no-install-recommends debootstrap >/dev/null; }
  }
  mkdir -p "$CACHE"
  rootfs=$(mktemp -d "$CACHE/rootfs.XXXXXX")
  t=$SECONDS
  log "debootstrap --variant=minbase --include=$PACKAGES $SUITE from $(mirror)"
  if debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$rootfs" "$(mirror)" \
    >"$work/debootstrap.log" 2>&1; then
    # what a container never needs: package caches and lists, documentation, translations
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
      "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/*
    tar -C "$rootfs" --numeric-owner -cf "$base_tar.tmp" .
    mv -f "$base_tar.tmp" "$base_tar"
    log "debootstrap took $((SECONDS - t))s; rootfs $(du -sh "$base_tar" | cut -f1)"
  else
    tail -n 20 "$work/debootstrap.log" >&2
  fi
  unmount_below "$rootfs"
  rm -rf "$rootfs"
fi
if [[ -s $base_tar ]] &&
  dk import -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'CMD ["/bin/bash"]' - "$BASE_IMAGE" <"$base_tar" >/dev/null; then
  ok "debootstrapped $SUITE base imported into $BUILD_HOST's engine as $BASE_IMAGE"
else
  bad "base image from debootstrap"
  abort
fi

# ------------------------------------------------------------------ build

binary=${GREMESH_BIN:-}
if [[ -z $binary ]]; then
  for b in target/release/gremesh target/debug/gremesh; do
    [[ -x $b ]] || continue
    if [[ -z $binary || $b -nt $binary ]]; then binary=$b; fi
  done
fi
if [[ -z $binary || ! -x $binary ]]; then
  bad "a gremesh binary to put in the image (build one first)"
  abort
fi
# Build context: the Dockerfile, .dockerignore and the binary at the path the build arg names.
ctx=$work/context
mkdir -p "$ctx/bin"
cp Dockerfile .dockerignore "$ctx/"
strip --strip-debug -o "$ctx/bin/gremesh" "$binary" 2>/dev/null || cp "$binary" "$ctx/bin/gremesh"
printf '*\n!bin/gremesh\n' >"$ctx/.dockerignore"
t=$SECONDS
# --network none: the base already has ssh, so the build must not need the network (the lab
# engines have none anyway). DOCKER_BUILDKIT=0: the lab's Docker 20.10 engine and a client
# without buildx build with the classic builder.
if DOCKER_BUILDKIT=0 dk build --network none --build-arg "BASE_IMAGE=$BASE_IMAGE" \
  --build-arg GREMESH_BINARY=bin/gremesh -t "$IMAGE" "$ctx" >"$work/build.log" 2>&1; then
  ok "docker build FROM $BASE_IMAGE with $binary ($((SECONDS - t))s)"
else
  bad "docker build" "$(tail -n 20 "$work/build.log")"
  abort
fi

# ------------------------------------------------------------------ run

# How the Helm chart runs the container: uid 65532, read-only root, /tmp writable, no
# capabilities, no privilege escalation.
hardened=(--read-only --tmpfs "/tmp:rw,nosuid,nodev,size=32m" --cap-drop ALL
  --security-opt no-new-privileges)

want=$("$binary" --version)
got=$(dk run --rm "${hardened[@]}" "$IMAGE" --version 2>&1 || true)
if [[ $got == "$want" ]]; then
  ok "docker run IMAGE --version: $got"
else
  bad "--version" "got: $got, want: $want"
fi

user=$(dk image inspect "$IMAGE" \
  --format '{{.Config.User}} {{json .Config.Entrypoint}} {{json .Config.Cmd}}')
ids=$(dk run --rm "${hardened[@]}" --entrypoint id "$IMAGE" 2>&1 || true)
if [[ $user == '65532:65532 ["gremesh"] ["operator"]' &&
  $ids == 'uid=65532(gremesh) gid=65532(gremesh) groups=65532(gremesh)' ]]; then
  ok "runs as gremesh (65532:65532), entrypoint gremesh, default command operator"
else
  bad "user and entrypoint" "config: $user; id: $ids"
fi

sshv=$(dk run --rm "${hardened[@]}" --entrypoint ssh "$IMAGE" -V 2>&1 || true)
if [[ $sshv == OpenSSH_* ]]; then
  ok "OpenSSH client in the image: ${sshv%%,*}"
else
  bad "ssh -V" "$sshv"
fi

# The binary in the image is the one given: same CRDs as running it here (whether those
# match crds/gremesh.yaml is cargo test's concern).
dk run --rm "${hardened[@]}" "$IMAGE" crd >"$work/crd.image.yaml" 2>&1 || true
if "$binary" crd | cmp -s - "$work/crd.image.yaml"; then
  ok "gremesh crd in the image prints what $binary prints"
else
  bad "gremesh crd in the image" "$(head -n 5 "$work/crd.image.yaml")"
fi

# The lab's Secret and its first three DockerHosts, and a VXLAN mesh over them with one
# container each (the lab kernel has no GRE).
mkdir -p "$work/manifests"
python3 - "$STATE/hosts.yaml" "$work/manifests/hosts.yaml" "${HOSTS[@]}" <<'PY'
import sys, yaml
src, dst, hosts = sys.argv[1], sys.argv[2], set(sys.argv[3:])
docs = [d for d in yaml.safe_load_all(open(src)) if d]
keep = [d for d in docs if d["kind"] == "Secret" or d["metadata"]["name"] in hosts]
yaml.safe_dump_all(keep, open(dst, "w"), sort_keys=False)
PY
{
  printf 'apiVersion: gremesh.io/v1alpha1\nkind: GreMesh\nmetadata: {name: %s}\nspec:\n' "$MESH"
  printf '  encapsulation: vxlan\n  key: 4077\n  network: 10.77.0.0/16\n  hosts:\n'
  i=1
  for h in "${HOSTS[@]}"; do
    printf '    - {name: %s, subnet: 10.77.%d.0/24}\n' "$h" "$i"
    i=$((i + 1))
  done
  i=1; for h in "${HOSTS[@]}"; do
    printf -- '---\napiVersion: gremesh.io/v1alpha1\nkind: ContainerAttachment\n'
    printf 'metadata: {name: %s-%s}\n' "$MESH" "${h#host-}"
    printf 'spec: {mesh: %s, host: %s, container: %s-%s, address: 10.77.%d.10}\n' \
      "$MESH" "$h" "$MESH" "${h#host-}" "$i"
    i=$((i + 1))
  done
} >"$work/manifests/mesh.yaml"
# The container runs as uid 65532: it must be able to read the manifests.
chmod 0755 "$work" "$work/manifests"
chmod 0644 "$work/manifests"/*.yaml
for h in "${HOSTS[@]}"; do "$LAB" run "$h" "$MESH-${h#host-}" >/dev/null; done

# On host-a's engine, --network host is host-a's network namespace: the other lab hosts are
# on its underlay, 10.200.0.0/24.
apply() {
  dk run --rm --network host "${hardened[@]}" -v "$work/manifests:/manifests:ro" "$IMAGE" \
    apply -f /manifests/hosts.yaml -f /manifests/mesh.yaml -o json
}
t=$SECONDS
if apply >"$work/apply1.json" 2>"$work/apply1.err"; then
  ok "gremesh apply from the image converged ${#HOSTS[@]} lab hosts ($((SECONDS - t))s)"
else
  bad "gremesh apply from the image" \
    "$(tail -n 20 "$work/apply1.err"; head -c 2000 "$work/apply1.json")"
fi

ping_fail=
for target in 10.77.2.10 10.77.3.10; do
  on "$BUILD_HOST" docker exec "$MESH-a" ping -c 2 -W 2 "$target" >/dev/null 2>&1 ||
    ping_fail+=" $target"
done
if [[ -z $ping_fail ]]; then
  ok "container on host-a pings the containers on host-b and host-c across the mesh"
else
  bad "ping across the mesh from host-a failed:$ping_fail"
fi

# steps planned or applied over all hosts, from the JSON report
steps_of() {
  python3 -c 'import json, sys
report = json.load(open(sys.argv[1]))
print(sum(h["applied"] + len(h["planned"]) for h in report["hosts"]))' "$1"
}
if apply >"$work/apply2.json" 2>"$work/apply2.err" && steps=$(steps_of "$work/apply2.json") &&
  [[ $steps == 0 ]]; then
  ok "second apply from the image changes nothing"
else
  bad "second apply from the image" "steps applied: ${steps:-?}; $(tail -n 5 "$work/apply2.err")"
fi

# ------------------------------------------------------------------ as the chart runs it

# The operator with the Helm chart's arguments and environment (rendered by the real Helm
# engine, tests/chart/helm.py) and its security settings, against a minimal API stand-in
# (tests/chart/fake_apiserver.py) on host-a's loopback: its probes and metrics must answer.
operator_check() {
  local port=18080 apiport='' i code
  if ! python3 -c 'import helm_sdkpy' 2>/dev/null; then
    log "SKIP operator with the chart's settings: no helm-sdkpy (tests/deploy.sh installs it)"
    return 0
  fi
  python3 - "$work/chart" "$port" <<'PY' || { bad "render the chart's Deployment"; return 0; }
import json, sys
sys.path.insert(0, "tests/chart")
import helm
out, port = sys.argv[1], int(sys.argv[2])
r = helm.render({"watchNamespace": "meshes", "replicaCount": 2, "metrics": {"port": port}})
pod = r.one("Deployment")["spec"]["template"]["spec"]
c = pod["containers"][0]
with open(out + ".args", "w") as f:
    f.write("\0".join(c["args"]) + "\0")
with open(out + ".env", "w") as f:
    f.write("".join(f"{e['name']}={e['value']}\0" for e in c["env"] if "value" in e))
sc, psc = c["securityContext"], pod["securityContext"]
assert psc["runAsUser"] == 65532 and psc["runAsGroup"] == 65532 and sc["readOnlyRootFilesystem"]
assert sc["capabilities"]["drop"] == ["ALL"] and not sc["allowPrivilegeEscalation"]
PY
  local -a args=() envs=()
  mapfile -d '' args <"$work/chart.args"
  mapfile -d '' envs <"$work/chart.env"
  local -a envflags=(-e POD_NAME=imgtest-operator-0 -e POD_NAMESPACE=gremesh-system
    -e KUBECONFIG=/kube/config)
  for e in "${envs[@]}"; do envflags+=(-e "$e"); done

  # started directly (not through a function) so that $! is the server itself: lab.sh sh
  # execs into it
  "$LAB" sh "$BUILD_HOST" python3 tests/chart/fake_apiserver.py "$work/apiport" >/dev/null 2>&1 &
  api_pid=$!
  for ((i = 0; i < 50; i++)); do [[ -s $work/apiport ]] && break; sleep 0.1; done
  apiport=$(cat "$work/apiport" 2>/dev/null || true)
  [[ -n $apiport ]] || { bad "API stand-in on host-a"; return 0; }
  mkdir -p "$work/kube"
  cat >"$work/kube/config" <<EOF
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "http://127.0.0.1:$apiport"}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
users: [{name: u, user: {}}]
current-context: c
EOF
  chmod 0755 "$work/kube"; chmod 0644 "$work/kube/config"
  dk rm -f "$MESH-operator" >/dev/null 2>&1 || true
  dk run -d --name "$MESH-operator" --network host --user 65532:65532 "${hardened[@]}" \
    -v "$work/kube:/kube:ro" "${envflags[@]}" "$IMAGE" "${args[@]}" >/dev/null
  probe() { # probe PATH -> "CODE BODY"
    on "$BUILD_HOST" python3 -c 'import sys, urllib.request, urllib.error
try:
    r = urllib.request.urlopen("http://127.0.0.1:'"$port"'" + sys.argv[1], timeout=2)
    print(r.status, r.read().decode()[:4000])
except urllib.error.HTTPError as e:
    print(e.code, "")
except Exception:
    print(0, "")' "$1"
  }
  for ((i = 0; i < 50; i++)); do
    code=$(probe /readyz | cut -d' ' -f1)
    [[ $code == 200 ]] && break
    sleep 0.2
  done
  local health ready metrics
  health=$(probe /healthz); ready=$(probe /readyz); metrics=$(probe /metrics)
  if [[ $health == "200 ok" && $ready == "200 ready" && $metrics == 200* ]] &&
    grep -q 'gremesh_' <<<"$metrics" &&
    [[ $(dk inspect --format '{{.State.Running}}' "$MESH-operator") == true ]]; then
    ok "operator with the chart's arguments (${args[*]}): /healthz, /readyz and /metrics answer"
  else
    bad "operator with the chart's arguments" \
      "healthz: $health; readyz: $ready; metrics: ${metrics:0:200}
$(dk logs --tail 20 "$MESH-operator" 2>&1)"
  fi
  dk rm -f "$MESH-operator" >/dev/null 2>&1 || true
  kill "$api_pid" 2>/dev/null || true
  wait "$api_pid" 2>/dev/null || true
}
operator_check

log "done in $((SECONDS - T0))s"
finish
