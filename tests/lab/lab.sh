#!/usr/bin/env bash
# gremesh test lab: N plain Docker hosts, each in its own network namespace,
# each with its own sshd, containerd and dockerd, on one underlay bridge.
#
#   lab.sh up [N]              stand up host-a .. host-<N> (default 3, 1..8); idempotent
#   lab.sh down                tear everything down (safe when nothing is up)
#   lab.sh status              one line per host: ssh / docker reachable?
#   lab.sh sh HOST [CMD...]    run CMD in HOST's netns with DOCKER_HOST set (default: bash)
#   lab.sh run HOST NAME [ARGS...]
#                              (re)start container NAME on HOST from the lab image,
#                              --network none, sleeping forever; ARGS go to `docker run`
#   lab.sh restart-host HOST   simulate a reboot of HOST (all its network state is lost)
#   lab.sh reload-sshd HOST    restart HOST's sshd with the current config
#                              (picks up <state>/HOST/sshd_extra.conf)
#
# Environment: GREMESH_LAB_STATE (default /run/gremesh-lab),
#              GREMESH_LAB_DATA  (default /var/lib/gremesh-lab; docker/containerd data roots)
set -euo pipefail

STATE=${GREMESH_LAB_STATE:-/run/gremesh-lab}
DATA=${GREMESH_LAB_DATA:-/var/lib/gremesh-lab}
STATE=${STATE%/}
DATA=${DATA%/}

BRIDGE=gmlab0
BRIDGE_ADDR=10.200.0.1/24
NET_PREFIX=10.200.0
LETTERS=(a b c d e f g h)
IMAGE=gremesh-lab/busybox:latest
NETNS_DIR=/var/run/netns
DOCKER_WAIT=${GREMESH_LAB_DOCKER_WAIT:-90}
FW_COMMENT=gremesh-lab

export DEBIAN_FRONTEND=noninteractive
export LC_ALL=C
umask 022

# shellcheck source=tests/lib/labkit.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/labkit.sh"

log() { printf '[lab] %s\n' "$*" >&2; }
die() { printf '[lab] error: %s\n' "$*" >&2; exit 1; }

usage() {
  sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

# ---------------------------------------------------------------- naming

host_letter() { # host-a -> a ; dies on anything else
  local h=$1
  [[ $h =~ ^host-([a-h])$ ]] || die "unknown host '$h' (expected host-a .. host-h)"
  printf '%s' "${BASH_REMATCH[1]}"
}
host_index() {
  local l i
  l=$(host_letter "$1")
  for i in "${!LETTERS[@]}"; do
    [[ ${LETTERS[$i]} == "$l" ]] && { printf '%s' "$i"; return 0; }
  done
  return 1
}
host_ip()   { local i; i=$(host_index "$1"); printf '%s.%s' "$NET_PREFIX" $((11 + i)); }
host_ns()   { printf 'gmlab-%s' "$1"; }
host_veth() { printf 'gmlab-%s' "$(host_letter "$1")"; }
host_dir()  { printf '%s/%s' "$STATE" "$1"; }
host_data() { printf '%s/%s' "$DATA" "$1"; }
host_sock() { printf '%s/%s/docker.sock' "$STATE" "$1"; }
host_nsfile() { printf '%s/%s' "$NETNS_DIR" "$(host_ns "$1")"; }

all_hosts() { local l; for l in "${LETTERS[@]}"; do printf 'host-%s\n' "$l"; done; }

# hosts the lab knows about (state dir with a host key)
known_hosts_list() {
  local h
  while read -r h; do
    [[ -f $(host_dir "$h")/ssh_host_ed25519_key.pub ]] && printf '%s\n' "$h"
  done < <(all_hosts)
  return 0
}

require_known_host() {
  host_letter "$1" >/dev/null
  [[ -e $(host_nsfile "$1") && -d $(host_dir "$1") ]] || die "$1 is not up (run: lab.sh up)"
}

# ---------------------------------------------------------------- locking

# fd 9 holds the lock; daemons are started with fd 9 closed (see spawn)
take_lock() { kit_take_lock "$STATE"; }

# ---------------------------------------------------------------- dependencies

apt_install() { kit_apt_install /tmp/gremesh-lab-apt.log "$@"; }

ensure_deps() {
  local -a need=()
  command -v ip >/dev/null || need+=(iproute2)
  command -v ss >/dev/null || need+=(iproute2)
  command -v nsenter >/dev/null || need+=(util-linux)
  command -v flock >/dev/null || need+=(util-linux)
  command -v dockerd >/dev/null || need+=(docker.io)
  command -v docker >/dev/null || need+=(docker.io)
  command -v containerd >/dev/null || need+=(containerd)
  command -v runc >/dev/null || need+=(runc)
  [[ -x /usr/sbin/sshd ]] || need+=(openssh-server)
  command -v ssh >/dev/null || need+=(openssh-client)
  command -v ssh-keygen >/dev/null || need+=(openssh-client)
  command -v tar >/dev/null || need+=(tar)
  if [[ ! -x /bin/busybox ]] && ! dpkg -s busybox >/dev/null 2>&1; then
    need+=(busybox-static)
  fi
  if ((${#need[@]})); then
    # shellcheck disable=SC2207
    need=($(printf '%s\n' "${need[@]}" | sort -u))
    apt_install "${need[@]}"
  fi
  mkdir -p /run/sshd
  chmod 0755 /run/sshd
  # sshd with UsePAM no refuses accounts whose password field starts with '!'
  local pw
  pw=$(getent shadow root | cut -d: -f2 || true)
  if [[ $pw == '!'* ]]; then
    log "warning: root's password is locked ('!' in /etc/shadow); the lab sshd (UsePAM no)"
    log "         will refuse root logins. Fix with: usermod -p '*' root"
  fi
  # unix socket paths are limited to 107 bytes
  local longest="$STATE/host-a/containerd.sock.ttrpc"
  ((${#longest} < 100)) || die "GREMESH_LAB_STATE is too long for unix socket paths: $STATE"
}

# ---------------------------------------------------------------- process helpers

# pid from FILE if that process is alive and its cmdline contains NEEDLE
pid_alive() {
  local file=$1 needle=$2 pid
  [[ -s $file ]] || return 1
  read -r pid <"$file" || true
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  [[ -r /proc/$pid/cmdline ]] || return 1
  grep -qaF -- "$needle" "/proc/$pid/cmdline" 2>/dev/null || return 1
  printf '%s' "$pid"
}

# ancestors of this script (never kill those)
self_pids() {
  local p=$BASHPID
  printf '%s\n' "$$" "$BASHPID"
  while [[ $p =~ ^[0-9]+$ ]] && ((p > 1)); do
    printf '%s\n' "$p"
    p=$(awk '/^PPid:/{print $2}' "/proc/$p/status" 2>/dev/null || echo 0)
  done
}

# every process that belongs to HOST: in its netns, mentions its state/data dir,
# or lives in one of its container cgroups
host_pids() {
  local h=$1 hd dd inode nsfile
  hd=$(host_dir "$h"); dd=$(host_data "$h"); nsfile=$(host_nsfile "$h")
  inode=
  if [[ -e $nsfile ]]; then
    inode=$(stat -L -c %i "$nsfile" 2>/dev/null || true)
  elif [[ -s $hd/netns.inode ]]; then
    read -r inode <"$hd/netns.inode" || true
  fi
  {
    if [[ -n $inode ]]; then
      find /proc -mindepth 3 -maxdepth 3 -path '/proc/[0-9]*/ns/net' -lname "net:?${inode}?" 2>/dev/null |
        cut -d/ -f3
    fi
    grep -laF -e "$hd/" -e "$dd/" /proc/[0-9]*/cmdline 2>/dev/null | cut -d/ -f3
    grep -lF -e "/gmlab-$h/" /proc/[0-9]*/cgroup 2>/dev/null | cut -d/ -f3
  } | sort -un | grep -vxF -f <(self_pids) || true
}

wait_gone() { # wait_gone SECONDS PID...
  local t=$1 p alive; shift
  local deadline=$((SECONDS + t))
  while :; do
    alive=0
    for p in "$@"; do [[ -d /proc/$p ]] && ! grep -q '^State:.*Z' "/proc/$p/status" 2>/dev/null && alive=1; done
    ((alive)) || return 0
    ((SECONDS >= deadline)) && return 1
    sleep 0.1
  done
}

# start a detached daemon (own session, no inherited stdio or lock fd)
spawn() { # spawn LOGFILE CMD...
  local logf=$1; shift
  setsid "$@" </dev/null >>"$logf" 2>&1 9>&- &
  SPAWNED=$!   # setsid does not fork here (we are no group leader): this is the daemon's pid
}

# ---------------------------------------------------------------- underlay

fw_rule() { kit_fw_rule "$1" "$2" "$BRIDGE" "$FW_COMMENT"; } # fw_rule -C|-I|-D TOOL

ensure_bridge() { kit_ensure_bridge "$BRIDGE" 02:67:6d:00:00:01 "$BRIDGE_ADDR" "$FW_COMMENT"; }

ensure_netns() {
  local h=$1 ns veth ip hd
  ns=$(host_ns "$h"); veth=$(host_veth "$h"); ip=$(host_ip "$h"); hd=$(host_dir "$h")
  if [[ ! -e $(host_nsfile "$h") ]]; then
    # a namespace that vanished: make sure nothing of the old incarnation survives
    stop_host_procs "$h"
    ip link del "$veth" 2>/dev/null || true
    ip netns add "$ns"
  fi
  stat -L -c %i "$(host_nsfile "$h")" >"$hd/netns.inode"
  # veth: root side in the bridge, eth0 inside the namespace
  if ip link show "$veth" >/dev/null 2>&1 && ! ip -n "$ns" link show eth0 >/dev/null 2>&1; then
    ip link del "$veth"
  fi
  if ! ip link show "$veth" >/dev/null 2>&1; then
    ip -n "$ns" link del eth0 2>/dev/null || true
    # fixed MACs: a restarted host keeps its MAC, so neighbours' ARP caches stay valid
    local i; i=$(host_index "$h")
    ip link add "$veth" address "$(printf '02:67:6d:00:01:%02x' $((11 + i)))" mtu 1500 type veth \
      peer name eth0 address "$(printf '02:67:6d:00:00:%02x' $((11 + i)))" mtu 1500 netns "$ns"
  fi
  ip link set "$veth" master "$BRIDGE"
  ip link set "$veth" up
  ip -n "$ns" link set lo up
  if ! ip -n "$ns" -4 addr show dev eth0 | grep -qF " ${ip}/24 "; then
    ip -n "$ns" addr flush dev eth0 scope global
    ip -n "$ns" addr add "${ip}/24" dev eth0
  fi
  ip -n "$ns" link set eth0 up
}

# ---------------------------------------------------------------- keys

ensure_client_key() { kit_ensure_key "$STATE/id_ed25519" gremesh-lab; }

ensure_host_key() { kit_ensure_key "$(host_dir "$1")/ssh_host_ed25519_key" "root@$1"; }

host_pubkey() { kit_pubkey "$(host_dir "$1")/ssh_host_ed25519_key.pub"; }

# ---------------------------------------------------------------- sshd

write_sshd_config() { # -> path of the config written
  local h=$1 out=$2 hd
  hd=$(host_dir "$h")
  {
    echo "# generated by tests/lab/lab.sh for $h -- regenerated on every sshd start"
    if [[ -f $hd/sshd_extra.conf ]]; then
      echo "# --- from $hd/sshd_extra.conf (first value wins in sshd_config)"
      cat "$hd/sshd_extra.conf"
      echo
      echo "# --- lab defaults"
    fi
    cat <<EOF
ListenAddress $(host_ip "$h"):22
HostKey $hd/ssh_host_ed25519_key
PidFile $hd/sshd.pid
LogLevel VERBOSE
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AuthorizedKeysFile $STATE/id_ed25519.pub
SetEnv DOCKER_HOST=unix://$(host_sock "$h")
UseDNS no
PrintMotd no
PrintLastLog no
X11Forwarding no
Subsystem sftp internal-sftp
EOF
  } >"$out"
}

sshd_running() { pid_alive "$(host_dir "$1")/sshd.pid" "$(host_dir "$1")/sshd_config"; }

sshd_listening() {
  [[ -n $(nsenter --net="$(host_nsfile "$1")" ss -Hltn "sport = :22" 2>/dev/null) ]]
}

start_sshd() {
  local h=$1 hd pid deadline
  hd=$(host_dir "$h")
  write_sshd_config "$h" "$hd/sshd_config.new"
  if ! /usr/sbin/sshd -t -f "$hd/sshd_config.new" 2>"$hd/sshd_config.err"; then
    cat "$hd/sshd_config.err" >&2
    die "$h: sshd config test failed ($hd/sshd_config.new)"
  fi
  mv -f "$hd/sshd_config.new" "$hd/sshd_config"
  rm -f "$hd/sshd.pid" "$hd/sshd_config.err"
  # sshd daemonizes itself; -E sends its log to a file
  host_enter "$h" /usr/sbin/sshd -f "$hd/sshd_config" -E "$hd/sshd.log" </dev/null 9>&- ||
    { tail -n 20 "$hd/sshd.log" >&2; die "$h: sshd failed to start"; }
  deadline=$((SECONDS + 15))
  until pid=$(sshd_running "$h") && sshd_listening "$h"; do
    if ((SECONDS >= deadline)); then
      tail -n 20 "$hd/sshd.log" >&2
      die "$h: sshd did not come up (log: $hd/sshd.log)"
    fi
    sleep 0.1
  done
}

stop_sshd() { # stops the listener only (open sessions survive, like a reload)
  local pid
  if pid=$(sshd_running "$1"); then
    kill "$pid" 2>/dev/null || true
    wait_gone 10 "$pid" || kill -9 "$pid" 2>/dev/null || true
    wait_gone 5 "$pid" || true
  fi
  rm -f "$(host_dir "$1")/sshd.pid"
}

# ---------------------------------------------------------------- containerd + dockerd

write_engine_configs() {
  local h=$1 hd dd
  hd=$(host_dir "$h"); dd=$(host_data "$h")
  mkdir -p "$dd/containerd" "$dd/docker" "$hd/containerd" "$hd/exec"
  cat >"$hd/containerd.toml" <<EOF
# generated by tests/lab/lab.sh for $h
version = 2
root = "$dd/containerd"
state = "$hd/containerd"
oom_score = 0
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "$hd/containerd.sock"

[ttrpc]
  address = "$hd/containerd.sock.ttrpc"

[debug]
  address = ""
  level = "info"

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "$dd/containerd/opt"
EOF
  # An explicit config file keeps /etc/docker/daemon.json out of the lab; a
  # per-host key file gives every engine its own `docker info` ID (the default,
  # /etc/docker/key.json, would be shared by all hosts).
  printf '{\n  "deprecated-key-path": "%s/key.json"\n}\n' "$hd" >"$hd/daemon.json"
}

# Each host has its own UTS namespace (hostname = host name), kept in a file.
is_mountpoint() { awk -v d="$1" '$5 == d {f=1} END {exit !f}' /proc/self/mountinfo; }

ensure_uts() {
  local h=$1 f
  f=$(host_dir "$h")/uts
  is_mountpoint "$f" && return 0
  touch "$f"
  unshare --uts="$f" hostname "$h"
}

# nsenter into HOST's network + UTS namespaces
host_enter() { # host_enter HOST CMD...
  local h=$1; shift
  nsenter --net="$(host_nsfile "$h")" --uts="$(host_dir "$h")/uts" "$@"
}

containerd_running() { pid_alive "$(host_dir "$1")/containerd.pid" "$(host_dir "$1")/containerd.toml"; }
dockerd_running()    { pid_alive "$(host_dir "$1")/dockerd.pid" "$(host_sock "$1")"; }

docker_h() { local h=$1; shift; docker -H "unix://$(host_sock "$h")" "$@"; }

docker_ok() { docker_h "$1" info --format '{{.ServerVersion}}' >/dev/null 2>&1; }

start_containerd() {
  local h=$1 hd ns deadline
  hd=$(host_dir "$h"); ns=$(host_nsfile "$h")
  rm -f "$hd/containerd.pid" "$hd/containerd.sock" "$hd/containerd.sock.ttrpc"
  # bash -c writes its own pid, then execs (same pid) nsenter, which execs containerd
  # shellcheck disable=SC2016
  spawn "$hd/containerd.log" bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$hd/containerd.pid" \
    nsenter --net="$ns" --uts="$hd/uts" containerd --config "$hd/containerd.toml"
  deadline=$((SECONDS + 30))
  until [[ -S $hd/containerd.sock ]] && containerd_running "$h" >/dev/null; do
    if ((SECONDS >= deadline)) || { [[ -s $hd/containerd.pid ]] && ! [[ -d /proc/$(cat "$hd/containerd.pid") ]]; }; then
      tail -n 20 "$hd/containerd.log" >&2
      die "$h: containerd did not come up (log: $hd/containerd.log)"
    fi
    sleep 0.1
  done
}

start_dockerd() { # does not wait; see wait_dockerd
  local h=$1 hd dd ns
  hd=$(host_dir "$h"); dd=$(host_data "$h"); ns=$(host_nsfile "$h")
  rm -f "$hd/dockerd.pid" "$(host_sock "$h")"
  spawn "$hd/dockerd.log" nsenter --net="$ns" --uts="$hd/uts" dockerd \
    --config-file "$hd/daemon.json" \
    --data-root "$dd/docker" \
    --exec-root "$hd/exec" \
    --pidfile "$hd/dockerd.pid" \
    -H "unix://$(host_sock "$h")" \
    --containerd "$hd/containerd.sock" \
    --bridge none \
    --iptables=false \
    --ip6tables=false \
    --ip-masq=false \
    --userland-proxy=false \
    --cgroup-parent "gmlab-$h" \
    --shutdown-timeout 3
  echo "$SPAWNED" >"$hd/dockerd.spawn.pid"
}

wait_dockerd() {
  local h=$1 hd deadline
  hd=$(host_dir "$h")
  deadline=$((SECONDS + DOCKER_WAIT))
  until docker_ok "$h"; do
    if ((SECONDS >= deadline)); then
      log "$h: dockerd did not answer within ${DOCKER_WAIT}s; last lines of $hd/dockerd.log:"
      tail -n 25 "$hd/dockerd.log" >&2 || true
      die "$h: docker engine not reachable at $(host_sock "$h")"
    fi
    # a dockerd that exited fails fast
    if ! dockerd_running "$h" >/dev/null &&
      ! pid_alive "$hd/dockerd.spawn.pid" "$hd/dockerd.pid" >/dev/null; then
      log "$h: dockerd exited; last lines of $hd/dockerd.log:"
      tail -n 25 "$hd/dockerd.log" >&2 || true
      die "$h: dockerd failed to start"
    fi
    sleep 0.2
  done
}

# ---------------------------------------------------------------- lab image

build_image_tar() {
  local tarf=$STATE/image.tar root bb app
  [[ -s $tarf ]] && return 0
  root=$(mktemp -d "$STATE/image-root.XXXXXX")
  mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,tmp,root,var/www,proc,sys,dev}
  chmod 1777 "$root/tmp"
  bb=/bin/busybox
  cp "$bb" "$root/bin/busybox"
  if ! chroot "$root" /bin/busybox true 2>/dev/null; then
    # /bin/busybox is a dynamic build (package busybox): take the static one
    # from busybox-static without installing it over the system one
    local dl; dl=$(mktemp -d)
    (cd "$dl" && apt-get download busybox-static </dev/null >/dev/null 2>&1) ||
      { apt-get update </dev/null >/dev/null 2>&1 || true; (cd "$dl" && apt-get download busybox-static </dev/null >/dev/null); }
    dpkg -x "$dl"/busybox-static_*.deb "$dl/x"
    cp "$dl/x/bin/busybox" "$root/bin/busybox"
    rm -rf "$dl"
    chroot "$root" /bin/busybox true || die "no usable static busybox"
  fi
  while read -r app; do
    [[ -z $app || $app == bin/busybox ]] && continue
    [[ -e $root/$app || -L $root/$app ]] && continue
    mkdir -p "$root/$(dirname "$app")"
    ln -s /bin/busybox "$root/$app"
  done < <(chroot "$root" /bin/busybox --list-full)
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
  tar -C "$root" --numeric-owner --owner=0 --group=0 -cf "$tarf.tmp" .
  mv -f "$tarf.tmp" "$tarf"
  rm -rf "$root"
}

ensure_image() {
  local h=$1
  docker_h "$h" image inspect "$IMAGE" >/dev/null 2>&1 && return 0
  build_image_tar
  docker_h "$h" import \
    -c 'ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'CMD ["sleep","2147483647"]' \
    - "$IMAGE" <"$STATE/image.tar" >/dev/null ||
    die "$h: docker import of $IMAGE failed"
}

# ---------------------------------------------------------------- manifests

write_manifests() {
  local h
  kit_write_manifests "$STATE/hosts.yaml" "generated by tests/lab/lab.sh -- the gremesh lab hosts" \
    gremesh-lab-ssh "$STATE/id_ed25519" known_hosts_list host_ip host_pubkey
  # a ready-made known_hosts for plain ssh
  while read -r h; do
    printf '%s %s\n' "$(host_ip "$h")" "$(host_pubkey "$h")"
  done < <(known_hosts_list) >"$STATE/known_hosts.tmp"
  mv -f "$STATE/known_hosts.tmp" "$STATE/known_hosts"
}

# ---------------------------------------------------------------- teardown helpers

unmount_under() { # unmount every mount at or below the given dirs, deepest first
  local d mp
  local -a mps=()
  for d in "$@"; do
    while read -r mp; do mps+=("$mp"); done < <(
      awk -v d="$d" '$5 == d || index($5, d "/") == 1 {print $5}' /proc/self/mountinfo)
  done
  ((${#mps[@]})) || return 0
  while read -r mp; do
    umount "$mp" 2>/dev/null || umount -l "$mp" 2>/dev/null || log "warning: could not unmount $mp"
  done < <(printf '%s\n' "${mps[@]}" | awk '{print length($0) "\t" $0}' | sort -rn -u | cut -f2-)
}

remove_cgroups() { # container cgroups created under --cgroup-parent gmlab-HOST
  local h=$1 d
  [[ -d /sys/fs/cgroup ]] || return 0
  while read -r d; do rmdir "$d" 2>/dev/null || true; done < <(
    find /sys/fs/cgroup -depth -type d \( -name "gmlab-$h" -o -path "*/gmlab-$h/*" \) 2>/dev/null)
}

# Shims that were killed (not shut down) leave their sockets in /run/containerd/s,
# a fixed path in containerd 1.6, named sha256("<containerd address>/<ns>/<id>").
# Remove those of every container this host's engine knows (and of live bundles).
remove_shim_sockets() {
  local h=$1 hd dd a addr id
  hd=$(host_dir "$h"); dd=$(host_data "$h")
  [[ -d /run/containerd/s ]] || return 0
  for a in "$hd"/containerd/io.containerd.runtime.v2.task/*/*/address; do
    [[ -f $a ]] || continue
    read -r addr <"$a" || true
    addr=${addr#unix://}
    [[ $addr == /run/containerd/s/* && -S $addr ]] && rm -f "$addr"
  done
  for a in "$dd"/docker/containers/*/; do
    [[ -d $a ]] || continue
    id=$(basename "$a")
    addr=$(printf '%s' "$hd/containerd.sock/moby/$id" | sha256sum | cut -c1-64)
    [[ -S /run/containerd/s/$addr ]] && rm -f "/run/containerd/s/$addr"
  done
  return 0
}

# stop dockerd (gracefully: containers are stopped and remembered), containerd,
# sshd and every other process of the host; unmount its mounts
stop_host_procs() {
  local h=$1 hd dd pid
  local -a pids
  hd=$(host_dir "$h"); dd=$(host_data "$h")
  if pid=$(dockerd_running "$h"); then
    kill -TERM "$pid" 2>/dev/null || true
    wait_gone 20 "$pid" || { log "$h: dockerd slow to stop, killing"; kill -9 "$pid" 2>/dev/null || true; }
  fi
  if pid=$(containerd_running "$h"); then
    kill -TERM "$pid" 2>/dev/null || true
    wait_gone 10 "$pid" || kill -9 "$pid" 2>/dev/null || true
  fi
  stop_sshd "$h"
  mapfile -t pids < <(host_pids "$h")
  if ((${#pids[@]})); then
    kill -TERM "${pids[@]}" 2>/dev/null || true
    if ! wait_gone 3 "${pids[@]}"; then
      kill -KILL "${pids[@]}" 2>/dev/null || true
      wait_gone 5 "${pids[@]}" || true
    fi
    # a second sweep for anything forked meanwhile
    mapfile -t pids < <(host_pids "$h")
    if ((${#pids[@]})); then
      kill -KILL "${pids[@]}" 2>/dev/null || true
      wait_gone 5 "${pids[@]}" || log "warning: $h: processes left: ${pids[*]}"
    fi
  fi
  remove_shim_sockets "$h"
  unmount_under "$hd" "$dd"
  remove_cgroups "$h"
  rm -f "$hd/dockerd.pid" "$hd/containerd.pid" "$hd/sshd.pid" "$(host_sock "$h")" \
    "$hd/containerd.sock" "$hd/containerd.sock.ttrpc"
}

delete_host_net() {
  local h=$1
  ip link del "$(host_veth "$h")" 2>/dev/null || true
  if [[ -e $(host_nsfile "$h") ]]; then
    ip netns del "$(host_ns "$h")" 2>/dev/null || { umount -l "$(host_nsfile "$h")" 2>/dev/null || true; rm -f "$(host_nsfile "$h")"; }
  fi
}

# ---------------------------------------------------------------- commands

bring_up_host_base() { # network, keys, configs, sshd (fast part)
  local h=$1 hd
  hd=$(host_dir "$h")
  mkdir -p "$hd" "$(host_data "$h")"
  ensure_host_key "$h"
  ensure_netns "$h"
  ensure_uts "$h"
  write_engine_configs "$h"
  if ! sshd_running "$h" >/dev/null || ! sshd_listening "$h"; then
    stop_sshd "$h"
    start_sshd "$h"
  fi
}

start_engine_async() {
  local h=$1 pid
  if ! containerd_running "$h" >/dev/null; then
    # dockerd without its containerd is useless: restart both
    if pid=$(dockerd_running "$h"); then
      kill -TERM "$pid" 2>/dev/null || true
      wait_gone 20 "$pid" || kill -9 "$pid" 2>/dev/null || true
    fi
    start_containerd "$h"
  fi
  if ! dockerd_running "$h" >/dev/null; then
    start_dockerd "$h"
  fi
}

cmd_up() {
  local n=${1:-3} i h t0=$SECONDS
  [[ $n =~ ^[1-8]$ ]] || die "up: N must be 1..8 (got '$n')"
  (($# <= 1)) || die "usage: lab.sh up [N]"
  ensure_deps
  take_lock
  mkdir -p "$STATE" "$DATA"
  ensure_client_key
  ensure_bridge
  local -a hosts=()
  for ((i = 0; i < n; i++)); do hosts+=("host-${LETTERS[$i]}"); done
  for h in "${hosts[@]}"; do bring_up_host_base "$h"; done
  for h in "${hosts[@]}"; do start_engine_async "$h"; done
  for h in "${hosts[@]}"; do wait_dockerd "$h"; ensure_image "$h"; done
  write_manifests
  local extra
  extra=$(known_hosts_list | grep -vxF -f <(printf '%s\n' "${hosts[@]}") || true)
  [[ -z $extra ]] || log "note: also up from before: $(echo "$extra" | tr '\n' ' ')"
  log "lab up in $((SECONDS - t0))s: $(known_hosts_list | tr '\n' ' ')"
  cat <<EOF
hosts:       $(known_hosts_list | while read -r h; do printf '%s=%s ' "$h" "$(host_ip "$h")"; done)
manifests:   $STATE/hosts.yaml
ssh key:     $STATE/id_ed25519
known_hosts: $STATE/known_hosts
try:         ssh -i $STATE/id_ed25519 -o UserKnownHostsFile=$STATE/known_hosts root@$(host_ip host-a) docker ps
EOF
}

cmd_down() {
  (($# == 0)) || die "usage: lab.sh down"
  take_lock
  local h pid t0=$SECONDS
  local -a pids=()
  # signal every dockerd first so the hosts shut down in parallel
  while read -r h; do
    if pid=$(dockerd_running "$h"); then kill -TERM "$pid" 2>/dev/null || true; pids+=("$pid"); fi
  done < <(all_hosts)
  ((${#pids[@]} == 0)) || wait_gone 20 "${pids[@]}" || true
  while read -r h; do
    stop_host_procs "$h"
    delete_host_net "$h"
  done < <(all_hosts)
  if ip link show "$BRIDGE" >/dev/null 2>&1; then ip link del "$BRIDGE"; fi
  local t
  for t in iptables ip6tables; do
    if command -v "$t" >/dev/null; then
      while fw_rule -C "$t" 2>/dev/null; do fw_rule -D "$t" 2>/dev/null || break; done
    fi
  done
  unmount_under "$STATE" "$DATA"
  rm -rf "$STATE" "$DATA"
  # iproute2 leaves /run/netns bind-mounted on itself; drop it when nothing else uses it
  if [[ -d $NETNS_DIR ]] && [[ -z $(ls -A "$NETNS_DIR" 2>/dev/null) ]]; then
    umount "$NETNS_DIR" 2>/dev/null || true
    rmdir "$NETNS_DIR" 2>/dev/null || true
  fi
  # containerd shims create /run/containerd/s; remove it only if empty (a system
  # containerd keeps its socket there)
  rmdir /run/containerd/s /run/containerd 2>/dev/null || true
  rm -f "${STATE}.lock"
  log "lab down ($((SECONDS - t0))s)"
}

cmd_status() {
  local h ip sshs dockers rc=0 any=0
  while read -r h; do
    any=1
    ip=$(host_ip "$h")
    if [[ -e $(host_nsfile "$h") ]] &&
      timeout 10 ssh -n -i "$STATE/id_ed25519" -o BatchMode=yes -o ConnectTimeout=3 \
        -o StrictHostKeyChecking=yes -o UserKnownHostsFile="$STATE/known_hosts" \
        -o LogLevel=ERROR "root@$ip" true >/dev/null 2>&1; then
      sshs=ok
    else
      sshs=FAIL; rc=1
    fi
    if docker_ok "$h"; then dockers=ok; else dockers=FAIL; rc=1; fi
    printf '%s %s ssh=%s docker=%s\n' "$h" "$ip" "$sshs" "$dockers"
  done < <(known_hosts_list)
  if ((!any)); then echo "lab is down (no hosts in $STATE)"; return 1; fi
  return "$rc"
}

cmd_sh() {
  (($# >= 1)) || die "usage: lab.sh sh HOST [CMD...]"
  local h=$1; shift
  require_known_host "$h"
  (($#)) || set -- bash
  exec nsenter --net="$(host_nsfile "$h")" --uts="$(host_dir "$h")/uts" env DOCKER_HOST="unix://$(host_sock "$h")" "$@"
}

cmd_run() {
  (($# >= 2)) || die "usage: lab.sh run HOST NAME [docker run args...]"
  local h=$1 name=$2; shift 2
  require_known_host "$h"
  docker_h "$h" rm -f "$name" >/dev/null 2>&1 || true
  docker_h "$h" run -d --name "$name" --network none --stop-signal KILL "$@" \
    "$IMAGE" sleep 2147483647
}

cmd_restart_host() {
  (($# == 1)) || die "usage: lab.sh restart-host HOST"
  local h=$1 t0=$SECONDS
  require_known_host "$h"
  take_lock
  log "$h: stopping (dockerd, containerd, sshd) and deleting its namespace"
  stop_host_procs "$h"
  delete_host_net "$h"
  ensure_bridge
  bring_up_host_base "$h"
  start_engine_async "$h"
  wait_dockerd "$h"
  ensure_image "$h"
  write_manifests
  log "$h: back up in $((SECONDS - t0))s"
}

cmd_reload_sshd() {
  (($# == 1)) || die "usage: lab.sh reload-sshd HOST"
  local h=$1 hd
  require_known_host "$h"
  take_lock
  hd=$(host_dir "$h")
  write_sshd_config "$h" "$hd/sshd_config.check"
  /usr/sbin/sshd -t -f "$hd/sshd_config.check" ||
    { rm -f "$hd/sshd_config.check"; die "$h: new sshd config is invalid; old sshd left running"; }
  rm -f "$hd/sshd_config.check"
  stop_sshd "$h"
  start_sshd "$h"
  log "$h: sshd restarted"
}

main() {
  [[ $(id -u) == 0 ]] || die "must run as root"
  (($#)) || usage
  local cmd=$1; shift
  case $cmd in
    up) cmd_up "$@" ;;
    down) cmd_down "$@" ;;
    status) cmd_status "$@" ;;
    sh) cmd_sh "$@" ;;
    run) cmd_run "$@" ;;
    restart-host) cmd_restart_host "$@" ;;
    reload-sshd) cmd_reload_sshd "$@" ;;
    -h | --help | help) usage ;;
    *) log "unknown command '$cmd'"; usage ;;
  esac
}

main "$@"
