#!/usr/bin/env bash
# gremesh VM lab: N QEMU guests booting Debian's distribution kernel (which has ip_gre),
# each a plain Docker host with its own sshd and dockerd, on one underlay bridge.
#
#   vmlab.sh up [N]          start vm-a .. vm-<N> (default 3, 1..8); idempotent
#   vmlab.sh down            stop every guest, remove taps, bridge and state (keeps the cache)
#   vmlab.sh status          one line per guest: qemu / ssh / docker alive?
#   vmlab.sh sh HOST CMD...  run CMD as root in guest HOST over SSH (default: an interactive shell)
#
# Environment: GREMESH_VMLAB_STATE (default /run/gremesh-vmlab; keys, hosts.yaml, logs),
#              GREMESH_VMLAB_CACHE (default /var/cache/gremesh-vmlab; kernel, initramfs, image),
#              GREMESH_VMLAB_MEM   (MiB per guest, default 512),
#              GREMESH_VMLAB_KERNEL (a linux-image-* package name; default: the one
#                                    linux-image-amd64 depends on)
set -euo pipefail

STATE=${GREMESH_VMLAB_STATE:-/run/gremesh-vmlab}
CACHE=${GREMESH_VMLAB_CACHE:-/var/cache/gremesh-vmlab}
STATE=${STATE%/}
CACHE=${CACHE%/}
MEM=${GREMESH_VMLAB_MEM:-512}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

BRIDGE=gmvm0
BRIDGE_ADDR=10.201.0.1/24
NET_PREFIX=10.201.0
LETTERS=(a b c d e f g h)
IMAGE=gremesh-vmlab/busybox:latest
BOOT_WAIT=${GREMESH_VMLAB_BOOT_WAIT:-240}
FW_COMMENT=gremesh-vmlab
# bump when the initramfs layout changes (part of the initramfs cache key)
INITRD_FORMAT=1

# Loaded by the initramfs, in this order, to reach the machine's root over 9p and the
# underlay. Everything else is loaded by modprobe inside the guest (see guest-init.sh).
INITRD_MODULES=(
  drivers/virtio/virtio_ring drivers/virtio/virtio drivers/virtio/virtio_pci_legacy_dev
  drivers/virtio/virtio_pci_modern_dev drivers/virtio/virtio_pci fs/netfs/netfs
  fs/fscache/fscache net/9p/9pnet net/9p/9pnet_virtio fs/9p/9p net/core/failover
  drivers/net/net_failover drivers/net/virtio_net
)

export DEBIAN_FRONTEND=noninteractive
export LC_ALL=C
umask 022

# shellcheck source=tests/lib/labkit.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/labkit.sh"

log() { printf '[vmlab] %s\n' "$*" >&2; }
die() { printf '[vmlab] error: %s\n' "$*" >&2; exit 1; }

usage() {
  sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

# ---------------------------------------------------------------- naming

guest_index() { # vm-a -> 0 ; dies on anything else
  [[ $1 =~ ^vm-([a-h])$ ]] || die "unknown guest '$1' (expected vm-a .. vm-h)"
  local l=${BASH_REMATCH[1]} i
  for i in "${!LETTERS[@]}"; do
    [[ ${LETTERS[$i]} == "$l" ]] && { printf '%s' "$i"; return 0; }
  done
}
guest_ip()  { printf '%s.%s' "$NET_PREFIX" $((11 + $(guest_index "$1"))); }
guest_tap() { printf 'gmvm-%s' "${1#vm-}"; }
guest_mac() { printf '52:54:00:67:6d:%02x' $((11 + $(guest_index "$1"))); }
guest_dir() { printf '%s/%s' "$STATE" "$1"; }

all_guests() { local l; for l in "${LETTERS[@]}"; do printf 'vm-%s\n' "$l"; done; }

# guests this lab knows about (state dir with a host key)
known_guests() {
  local g
  while read -r g; do
    [[ -f $(guest_dir "$g")/ssh_host_ed25519_key.pub ]] && printf '%s\n' "$g"
  done < <(all_guests)
  return 0
}

# ---------------------------------------------------------------- locking

take_lock() { kit_take_lock "$STATE"; }

# ---------------------------------------------------------------- dependencies

apt_install() { kit_apt_install /tmp/gremesh-vmlab-apt.log "$@"; }

# Everything runs in the guests from the machine's own root (over 9p), so the tools the
# tests use inside the guests are installed here.
ensure_deps() {
  local -a need=()
  local c pkg
  for c in qemu-system-x86_64:qemu-system-x86 qemu-img:qemu-utils cpio:cpio \
    ip:iproute2 bridge:iproute2 tc:iproute2 nsenter:util-linux flock:util-linux \
    dockerd:docker.io docker:docker.io containerd:containerd runc:runc ssh:openssh-client \
    ssh-keygen:openssh-client xz:xz-utils readelf:binutils modprobe:kmod depmod:kmod nft:nftables iptables:iptables \
    ping:iputils-ping arping:iputils-arping tcpdump:tcpdump iperf3:iperf3; do
    command -v "${c%%:*}" >/dev/null || need+=("${c#*:}")
  done
  [[ -x /usr/sbin/sshd ]] || need+=(openssh-server)
  # the initramfs and the container image need the static build (/bin/busybox)
  dpkg-query -W -f '${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' ||
    need+=(busybox-static)
  if ((${#need[@]})); then
    # shellcheck disable=SC2207
    need=($(printf '%s\n' "${need[@]}" | sort -u))
    apt_install "${need[@]}"
  fi
  [[ -e /dev/net/tun ]] || die "/dev/net/tun is missing (tap devices need it)"
}

# ---------------------------------------------------------------- cache: kernel

# The package name of the kernel: $GREMESH_VMLAB_KERNEL, or what linux-image-amd64
# depends on (never a glob: that would fetch every version).
kernel_package() {
  if [[ -n ${GREMESH_VMLAB_KERNEL:-} ]]; then printf '%s' "$GREMESH_VMLAB_KERNEL"; return; fi
  local p
  p=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
  if [[ -z $p ]]; then
    apt-get update </dev/null >/dev/null 2>&1 || true
    p=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
  fi
  [[ $p =~ ^linux-image-[0-9][a-z0-9.+~-]*$ ]] || die "cannot tell which kernel linux-image-amd64 names"
  printf '%s' "$p"
}

# Sets KVER and KDIR (<cache>/kernel-KVER: boot/vmlinuz-KVER and lib/modules/KVER with
# modules.dep). A kernel already in the cache is used as is (no registry look-up).
ensure_kernel() {
  local d pkg dl
  if [[ -z ${GREMESH_VMLAB_KERNEL:-} ]]; then
    for d in "$CACHE"/kernel-*/; do
      [[ -f $d/ready ]] || continue
      KVER=$(basename "$d"); KVER=${KVER#kernel-}; KDIR=${d%/}
      [[ -f $KDIR/boot/vmlinux-$KVER ]] ||
        extract_vmlinux "$KDIR/boot/vmlinuz-$KVER" "$KDIR/boot/vmlinux-$KVER" || true
      return 0
    done
  fi
  pkg=$(kernel_package)
  KVER=${pkg#linux-image-}
  KDIR=$CACHE/kernel-$KVER
  [[ -f $KDIR/ready ]] && return 0
  log "fetching $pkg (download only; it is not installed)"
  rm -rf "$KDIR" "$CACHE/dl"
  mkdir -p "$CACHE/dl"
  dl=$CACHE/dl
  (cd "$dl" && apt-get download "$pkg" </dev/null >"$dl/apt.log" 2>&1) ||
    { apt-get update </dev/null >/dev/null 2>&1 || true
      (cd "$dl" && apt-get download "$pkg" </dev/null >"$dl/apt.log" 2>&1) ||
        { cat "$dl/apt.log" >&2; die "apt-get download $pkg failed"; }; }
  dpkg -x "$dl"/"$pkg"_*.deb "$KDIR"
  rm -rf "$dl"
  [[ -f $KDIR/boot/vmlinuz-$KVER && -d $KDIR/lib/modules/$KVER ]] ||
    die "$pkg has no boot/vmlinuz-$KVER or lib/modules/$KVER"
  depmod -b "$KDIR" "$KVER"
  extract_vmlinux "$KDIR/boot/vmlinuz-$KVER" "$KDIR/boot/vmlinux-$KVER" ||
    log "note: booting the compressed kernel (no PVH vmlinux could be extracted)"
  touch "$KDIR/ready"
}

# The uncompressed kernel (an ELF with a PVH entry note) boots a few seconds sooner under
# TCG than the bzImage, which decompresses itself in emulation. Debian compresses with xz.
extract_vmlinux() { # extract_vmlinux BZIMAGE OUT
  local off
  command -v xz >/dev/null || return 1
  off=$(grep -abo $'\xfd7zXZ\x00' "$1" | head -n 1 | cut -d: -f1) || return 1
  [[ $off =~ ^[0-9]+$ ]] || return 1
  # xz complains about the bytes after the stream; the output is complete all the same
  tail -c +$((off + 1)) "$1" | xz -dc >"$2.tmp" 2>/dev/null || true
  if readelf -n "$2.tmp" 2>/dev/null | grep -q 'Xen.*0x00000012'; then
    mv -f "$2.tmp" "$2"
  else
    rm -f "$2.tmp"
    return 1
  fi
}

kernel_image() { # the image QEMU boots
  if [[ -f $KDIR/boot/vmlinux-$KVER ]]; then
    printf '%s' "$KDIR/boot/vmlinux-$KVER"
  else
    printf '%s' "$KDIR/boot/vmlinuz-$KVER"
  fi
}

# ---------------------------------------------------------------- cache: initramfs

# The initramfs is busybox plus the modules that reach 9p and the network. Its /init
# mounts the machine's root read-only, a tmpfs on /run with the lab's state and cache
# shares below it, and makes that the root (switch_root) to exec guest-init.sh as PID 1.
write_init() {
  cat <<'EOF'
#!/bin/busybox sh
# gremesh vmlab initramfs /init (generated by tests/vm/vmlab.sh)
/bin/busybox mkdir -p /proc /sys /dev /newroot
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
fail() { echo "gmvm-initramfs: $*" >/dev/console; /bin/busybox sleep 2; echo o >/proc/sysrq-trigger; /bin/busybox sleep 60; }
while read -r m; do
  /bin/busybox insmod "/modules/$m.ko" || fail "insmod $m failed"
done </modules.list
opts=trans=virtio,version=9p2000.L,msize=262144
/bin/busybox mount -t 9p -o "$opts,ro,cache=loose" hostroot /newroot || fail "mount hostroot"
/bin/busybox mount -t tmpfs -o mode=0755,size=128m run /newroot/run || fail "tmpfs /run"
/bin/busybox mkdir -p /newroot/run/gmvm/state /newroot/run/gmvm/cache
/bin/busybox mount -t 9p -o "$opts,ro" vmstate /newroot/run/gmvm/state || fail "mount vmstate"
/bin/busybox mount -t 9p -o "$opts,ro" vmcache /newroot/run/gmvm/cache || fail "mount vmcache"
/bin/busybox mount --move /proc /newroot/proc
/bin/busybox mount --move /sys /newroot/sys
/bin/busybox mount --move /dev /newroot/dev
# switch_root moves the 9p root onto / (a plain chroot would leave the initramfs as the
# mount namespace's root, and setns() into a container's mount namespace -- docker exec --
# would then land there instead of in the container)
exec /bin/busybox switch_root /newroot /bin/bash /run/gmvm/state/guest-init.sh
EOF
}

# Sets INITRD (cached by kernel version, module list and /init text).
ensure_initrd() {
  local key tmp m
  key=$( { write_init; printf '%s\n' "$KVER" "$INITRD_FORMAT" "${INITRD_MODULES[@]}"
           sha256sum /bin/busybox; } | sha256sum | cut -c1-16)
  INITRD=$CACHE/initrd-$KVER-$key.cpio.gz
  [[ -s $INITRD ]] && return 0
  log "building the initramfs"
  tmp=$(mktemp -d "$CACHE/initrd.XXXXXX")
  mkdir -p "$tmp/bin" "$tmp/modules"
  cp /bin/busybox "$tmp/bin/busybox"
  for m in "${INITRD_MODULES[@]}"; do
    local f=$KDIR/lib/modules/$KVER/kernel/$m.ko
    [[ -f $f ]] || die "kernel $KVER has no module $m.ko"
    cp "$f" "$tmp/modules/$(basename "$m").ko"
    basename "$m" >>"$tmp/modules.list"
  done
  write_init >"$tmp/init"
  chmod 0755 "$tmp/init"
  (cd "$tmp" && find . -mindepth 1 | cpio --quiet -o -H newc -R 0:0 | gzip -1) >"$INITRD.tmp"
  mv -f "$INITRD.tmp" "$INITRD"
  rm -rf "$tmp"
  # older initramfs images of this kernel are of no more use
  find "$CACHE" -maxdepth 1 -name "initrd-$KVER-*.cpio.gz" ! -name "$(basename "$INITRD")" -delete
}

# ---------------------------------------------------------------- cache: container image

# A tar of a busybox root, imported into every guest's dockerd at boot.
ensure_image_tar() {
  local tarf=$CACHE/image.tar root app
  [[ -s $tarf ]] && return 0
  log "building the busybox image tar"
  root=$(mktemp -d "$CACHE/image.XXXXXX")
  mkdir -p "$root/bin" "$root/etc" "$root/tmp" "$root/proc" "$root/sys" "$root/dev"
  chmod 1777 "$root/tmp"
  cp /bin/busybox "$root/bin/busybox"
  while read -r app; do
    [[ -z $app || $app == bin/busybox ]] && continue
    [[ -e $root/$app || -L $root/$app ]] && continue
    mkdir -p "$root/$(dirname "$app")"
    ln -s /bin/busybox "$root/$app"
  done < <(/bin/busybox --list-full)
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
  mkdir -p "$root/root" "$root/var/www"
  tar -C "$root" --numeric-owner --owner=0 --group=0 -cf "$tarf.tmp" .
  mv -f "$tarf.tmp" "$tarf"
  rm -rf "$root"
}

# ---------------------------------------------------------------- underlay

fw_rule() { kit_fw_rule "$1" "$2" "$BRIDGE" "$FW_COMMENT"; } # fw_rule -C|-I|-D TOOL

ensure_bridge() { kit_ensure_bridge "$BRIDGE" 02:67:6d:01:00:01 "$BRIDGE_ADDR" "$FW_COMMENT"; }

ensure_tap() {
  local g=$1 tap
  tap=$(guest_tap "$g")
  ip link show "$tap" >/dev/null 2>&1 || ip tuntap add dev "$tap" mode tap
  ip link set "$tap" mtu 1500 master "$BRIDGE" up
}

# ---------------------------------------------------------------- keys

ensure_client_key() { kit_ensure_key "$STATE/id_ed25519" gremesh-vmlab; }

ensure_host_key() { kit_ensure_key "$(guest_dir "$1")/ssh_host_ed25519_key" "root@$1"; }

guest_pubkey() { kit_pubkey "$(guest_dir "$1")/ssh_host_ed25519_key.pub"; }

# ---------------------------------------------------------------- ssh to guests

SSH_OPTS=()
set_ssh_opts() {
  SSH_OPTS=(-i "$STATE/id_ed25519" -o BatchMode=yes -o StrictHostKeyChecking=yes
    -o UserKnownHostsFile="$STATE/known_hosts" -o GlobalKnownHostsFile=/dev/null
    -o ConnectTimeout=5 -o LogLevel=ERROR -o ServerAliveInterval=10
    -o ControlPath="$STATE/ssh-%h.sock")
}

# one persistent master connection per guest: `sh` (and the tests) reuse it
start_ssh_master() {
  local g=$1 ip
  ip=$(guest_ip "$g")
  ssh "${SSH_OPTS[@]}" -O check "root@$ip" >/dev/null 2>&1 && return 0
  rm -f "$STATE/ssh-$ip.sock"
  ssh "${SSH_OPTS[@]}" -o ControlMaster=yes -o ControlPersist=yes -f -N "root@$ip" \
    </dev/null >/dev/null 2>&1 9>&- || log "warning: $g: no ssh master connection"
}

stop_ssh_master() {
  local ip; ip=$(guest_ip "$1")
  [[ -S $STATE/ssh-$ip.sock ]] || return 0
  ssh "${SSH_OPTS[@]}" -O exit "root@$ip" >/dev/null 2>&1 || true
  rm -f "$STATE/ssh-$ip.sock"
}

guest_ssh() { # guest_ssh HOST CMD...   (words quoted for the remote shell)
  local g=$1 ip q=() w; shift
  ip=$(guest_ip "$g")
  for w in "$@"; do q+=("$(printf '%q' "$w")"); done
  ssh "${SSH_OPTS[@]}" -o ControlMaster=no "root@$ip" "${q[*]}"
}

# ---------------------------------------------------------------- qemu

qemu_running() { # prints the pid of the guest's QEMU if it is alive
  local f pid
  f=$(guest_dir "$1")/qemu.pid
  [[ -s $f ]] || return 1
  read -r pid <"$f" || return 1
  [[ $pid =~ ^[0-9]+$ && -r /proc/$pid/cmdline ]] || return 1
  grep -qaF -- "guest=$1," "/proc/$pid/cmdline" 2>/dev/null || return 1
  printf '%s' "$pid"
}

start_qemu() {
  local g=$1 d ip
  d=$(guest_dir "$g"); ip=$(guest_ip "$g")
  rm -f "$d/qemu.pid" "$d/console.log" "$STATE/ssh-$ip.sock"
  # The guest reads its config from the kernel command line (see guest-init.sh).
  local append="console=ttyS0 quiet loglevel=4 panic=-1 apparmor=0 mitigations=off"
  append+=" gmvm.name=$g gmvm.addr=$ip/24 gmvm.kver=$KVER gmvm.image=$IMAGE"
  qemu-system-x86_64 \
    -name "guest=$g,process=gmvm-$g" \
    -machine pc -accel tcg,tb-size=256 -cpu max -smp 1 -m "$MEM" \
    -nodefaults -no-user-config -display none -vga none -monitor none -no-reboot \
    -kernel "$(kernel_image)" -initrd "$INITRD" -append "$append" \
    -serial "file:$d/console.log" \
    -netdev "tap,id=u0,ifname=$(guest_tap "$g"),script=no,downscript=no" \
    -device "virtio-net-pci,netdev=u0,mac=$(guest_mac "$g")" \
    -virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap \
    -virtfs "local,path=$STATE,mount_tag=vmstate,security_model=none,readonly=on,multidevs=remap" \
    -virtfs "local,path=$CACHE,mount_tag=vmcache,security_model=none,readonly=on,multidevs=remap" \
    -pidfile "$d/qemu.pid" -daemonize </dev/null >"$d/qemu.log" 2>&1 9>&- ||
    { cat "$d/qemu.log" >&2; die "$g: qemu failed to start"; }
}

stop_qemu() {
  local g=$1 pid i
  pid=$(qemu_running "$g") || { rm -f "$(guest_dir "$g")/qemu.pid"; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do [[ -d /proc/$pid ]] || break; sleep 0.1; done
  if [[ -d /proc/$pid ]]; then kill -KILL "$pid" 2>/dev/null || true; fi
  rm -f "$(guest_dir "$g")/qemu.pid"
}

# ready = sshd answers and docker has the lab image
guest_ready() {
  guest_ssh "$1" docker image inspect --format '{{.Id}}' "$IMAGE" </dev/null >/dev/null 2>&1
}

wait_ready() { # wait_ready GUEST... (in parallel; dies naming the guests that did not come up)
  local deadline=$((SECONDS + BOOT_WAIT)) g d
  local -a pending=("$@") left
  while ((${#pending[@]})); do
    left=()
    for g in "${pending[@]}"; do
      d=$(guest_dir "$g")
      if grep -q '^gmvm: ready' "$d/console.log" 2>/dev/null && guest_ready "$g"; then
        log "$g: ready ($(guest_ip "$g"))"
        continue
      fi
      if ! qemu_running "$g" >/dev/null; then
        tail -n 30 "$d/console.log" >&2 || true
        die "$g: qemu exited (console: $d/console.log)"
      fi
      if grep -q '^gmvm: FAILED' "$d/console.log" 2>/dev/null; then
        tail -n 30 "$d/console.log" >&2
        die "$g: guest setup failed (console: $d/console.log)"
      fi
      left+=("$g")
    done
    pending=("${left[@]+"${left[@]}"}")
    ((${#pending[@]})) || break
    if ((SECONDS >= deadline)); then
      for g in "${pending[@]}"; do tail -n 30 "$(guest_dir "$g")/console.log" >&2 || true; done
      die "not ready after ${BOOT_WAIT}s: ${pending[*]}"
    fi
    sleep 1
  done
}

# ---------------------------------------------------------------- manifests

write_manifests() {
  kit_write_manifests "$STATE/hosts.yaml" "generated by tests/vm/vmlab.sh -- the gremesh VM lab guests" \
    gremesh-vmlab-ssh "$STATE/id_ed25519" known_guests guest_ip guest_pubkey
  write_known_hosts
}

write_known_hosts() {
  local g
  while read -r g; do
    printf '%s %s\n' "$(guest_ip "$g")" "$(guest_pubkey "$g")"
  done < <(known_guests) >"$STATE/known_hosts.tmp"
  mv -f "$STATE/known_hosts.tmp" "$STATE/known_hosts"
}

# ---------------------------------------------------------------- commands

cmd_up() {
  local n=${1:-3} i g t0=$SECONDS
  [[ $n =~ ^[1-8]$ ]] || die "up: N must be 1..8 (got '$n')"
  (($# <= 1)) || die "usage: vmlab.sh up [N]"
  [[ -r /proc/cpuinfo ]] || die "no /proc"
  ensure_deps
  take_lock
  mkdir -p "$STATE" "$CACHE"
  chmod 0755 "$STATE"
  ensure_kernel
  ensure_initrd
  ensure_image_tar
  cp "$HERE/guest-init.sh" "$STATE/guest-init.sh.tmp"
  mv -f "$STATE/guest-init.sh.tmp" "$STATE/guest-init.sh"
  ensure_client_key
  ensure_bridge
  local -a guests=() started=()
  for ((i = 0; i < n; i++)); do guests+=("vm-${LETTERS[$i]}"); done
  for g in "${guests[@]}"; do
    mkdir -p "$(guest_dir "$g")"
    ensure_host_key "$g"
    ensure_tap "$g"
  done
  write_known_hosts
  set_ssh_opts
  for g in "${guests[@]}"; do
    if qemu_running "$g" >/dev/null && guest_ready "$g"; then continue; fi
    stop_ssh_master "$g"
    stop_qemu "$g"
    start_qemu "$g"
    started+=("$g")
  done
  ((${#started[@]} == 0)) || wait_ready "${started[@]}"
  for g in "${guests[@]}"; do start_ssh_master "$g"; done
  write_manifests
  local extra
  extra=$(known_guests | grep -vxF -f <(printf '%s\n' "${guests[@]}") || true)
  [[ -z $extra ]] || log "note: also up from before: $(echo "$extra" | tr '\n' ' ')"
  log "vmlab up in $((SECONDS - t0))s (kernel $KVER; started: ${started[*]:-none})"
  cat <<EOF
guests:      $(known_guests | while read -r g; do printf '%s=%s ' "$g" "$(guest_ip "$g")"; done)
manifests:   $STATE/hosts.yaml
ssh key:     $STATE/id_ed25519
known_hosts: $STATE/known_hosts
try:         $0 sh vm-a docker ps
EOF
}

cmd_down() {
  (($# == 0)) || die "usage: vmlab.sh down"
  take_lock
  local g t0=$SECONDS
  set_ssh_opts
  while read -r g; do
    stop_ssh_master "$g"
    stop_qemu "$g"
    ip link del "$(guest_tap "$g")" 2>/dev/null || true
  done < <(all_guests)
  if ip link show "$BRIDGE" >/dev/null 2>&1; then ip link del "$BRIDGE"; fi
  local t
  for t in iptables ip6tables; do
    if command -v "$t" >/dev/null; then
      while fw_rule -C "$t" 2>/dev/null; do fw_rule -D "$t" 2>/dev/null || break; done
    fi
  done
  rm -rf "$STATE"
  rm -f "${STATE}.lock"
  log "vmlab down ($((SECONDS - t0))s)"
}

cmd_status() {
  local g ip q s dk rc=0 any=0
  set_ssh_opts
  while read -r g; do
    any=1
    ip=$(guest_ip "$g")
    if qemu_running "$g" >/dev/null; then q=ok; else q=FAIL; fi
    s=FAIL; dk=FAIL
    if [[ $q == ok ]] && timeout 20 ssh "${SSH_OPTS[@]}" -o ControlMaster=no "root@$ip" true \
      </dev/null >/dev/null 2>&1; then
      s=ok
      timeout 20 ssh "${SSH_OPTS[@]}" -o ControlMaster=no "root@$ip" docker info --format x \
        </dev/null >/dev/null 2>&1 && dk=ok
    fi
    [[ $q == ok && $s == ok && $dk == ok ]] || rc=1
    printf '%s %s qemu=%s ssh=%s docker=%s\n' "$g" "$ip" "$q" "$s" "$dk"
  done < <(known_guests)
  if ((!any)); then echo "vmlab is down (no guests in $STATE)"; return 1; fi
  return "$rc"
}

cmd_sh() {
  (($# >= 1)) || die "usage: vmlab.sh sh HOST [CMD...]"
  local g=$1; shift
  guest_index "$g" >/dev/null
  [[ -f $(guest_dir "$g")/ssh_host_ed25519_key.pub && -s $STATE/known_hosts ]] ||
    die "$g is not up (run: vmlab.sh up)"
  set_ssh_opts
  if (($# == 0)); then
    exec ssh "${SSH_OPTS[@]}" -o ControlMaster=no -t "root@$(guest_ip "$g")"
  fi
  guest_ssh "$g" "$@"
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
    -h | --help | help) usage ;;
    *) log "unknown command '$cmd'"; usage ;;
  esac
}

main "$@"
