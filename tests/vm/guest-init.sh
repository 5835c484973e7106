#!/bin/bash
# PID 1 of a gremesh VM lab guest (copied into the lab state by vmlab.sh; the initramfs makes
# the machine's root, mounted read-only over 9p, the guest's root and execs this).
#
# Already there: /proc, /sys, /dev; a tmpfs on /run; the lab state at /run/gmvm/state and
# the cache (kernel modules, image tar) at /run/gmvm/cache, both read-only.
# It makes the writable paths, loads modules, brings up eth0, starts sshd and dockerd,
# imports the lab image, prints "gmvm: ready" on the console and then reaps orphans forever.
set -u
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root LC_ALL=C

say() { echo "gmvm: $*"; }
t() { echo "gmvm: [$(cut -d' ' -f1 /proc/uptime)] $*"; }
fail() { say "FAILED: $* (at $(cut -d' ' -f1 /proc/uptime)s)"; sleep 5; echo o >/proc/sysrq-trigger; sleep 60; }

# ---- configuration from the kernel command line (gmvm.name=vm-a gmvm.addr=... ...)
NAME='' ADDR='' KVER='' IMAGE=''
read -r -a words </proc/cmdline
for w in "${words[@]}"; do
  case $w in
    gmvm.name=*) NAME=${w#*=} ;;
    gmvm.addr=*) ADDR=${w#*=} ;;
    gmvm.kver=*) KVER=${w#*=} ;;
    gmvm.image=*) IMAGE=${w#*=} ;;
  esac
done
[[ -n $NAME && -n $ADDR && -n $KVER && -n $IMAGE ]] || fail "incomplete kernel command line"
G=/run/gmvm
STATE=$G/state
KROOT=$G/cache/kernel-$KVER

# ---- writable paths (the root itself stays read-only)
mkdir -p /dev/pts /dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
mount -t tmpfs -o mode=1777,size=64m shm /dev/shm
mount -t tmpfs -o mode=1777,size=256m tmp /tmp
mount -t cgroup2 cgroup2 /sys/fs/cgroup || fail "cgroup2"
# an empty home for root: the machine's dotfiles (shell start-up files) stay out of the guest
mount -t tmpfs -o mode=0700,size=16m roothome /root
mkdir -p "$G/docker" /run/sshd /run/lock
mount -t tmpfs -o mode=0711,size=384m docker "$G/docker"
hostname "$NAME"

t modules
# Modules: the kernel's own request_module() and every modprobe here find them in the cache.
printf '#!/bin/sh\nexec /usr/sbin/modprobe -d %s "$@"\n' "$KROOT" >"$G/modprobe"
chmod 0755 "$G/modprobe"
echo "$G/modprobe" >/proc/sys/kernel/modprobe
MODULES=(llc stp bridge veth gre ip_gre udp_tunnel ip6_udp_tunnel vxlan sch_netem overlay
  nf_tables nft_ct nft_reject_inet nft_compat x_tables ip_tables iptable_filter xt_comment tun)
"$G/modprobe" -a -q "${MODULES[@]}" || say "note: not every module loaded: $(
  for m in "${MODULES[@]}"; do [[ -d /sys/module/$m ]] || printf '%s ' "$m"; done)"
[[ -d /sys/module/ip_gre ]] || fail "ip_gre did not load"

t net
# ---- underlay
ip link set lo up
ip link set eth0 mtu 1500 up || fail "no eth0"
ip addr add "$ADDR" dev eth0

# ---- sshd: own host key, the lab's client key; a locked root password would refuse logins
cp "$STATE/$NAME/ssh_host_ed25519_key" "$G/ssh_host_ed25519_key"
chmod 0600 "$G/ssh_host_ed25519_key"
if getent shadow root | cut -d: -f2 | grep -q '^!'; then
  sed 's/^root:![^:]*:/root:*:/' /etc/shadow >"$G/shadow"
  chmod 0640 "$G/shadow"
  mount --bind "$G/shadow" /etc/shadow
fi
cat >"$G/sshd_config" <<EOF
ListenAddress ${ADDR%/*}:22
HostKey $G/ssh_host_ed25519_key
PidFile $G/sshd.pid
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AuthorizedKeysFile $STATE/id_ed25519.pub
UseDNS no
PrintMotd no
PrintLastLog no
X11Forwarding no
MaxStartups 100:30:200
MaxSessions 50
Subsystem sftp internal-sftp
EOF
/usr/sbin/sshd -f "$G/sshd_config" -E "$G/sshd.log" || fail "sshd did not start"
t sshd

# ---- dockerd (its own containerd; no bridge, no firewall changes)
printf '{\n  "deprecated-key-path": "%s/docker-key.json"\n}\n' "$G" >"$G/daemon.json"
setsid dockerd --config-file "$G/daemon.json" --data-root "$G/docker" \
  --storage-driver overlay2 --bridge none --iptables=false --ip6tables=false --ip-masq=false \
  --userland-proxy=false --shutdown-timeout 3 </dev/null >"$G/dockerd.log" 2>&1 &
# wait for the API socket without running the (heavy) docker client in a loop
for ((i = 0; i < 1200; i++)); do
  [[ -S /run/docker.sock ]] && break
  sleep 0.1
done
docker info --format '{{.ServerVersion}}' >/dev/null 2>&1 || { tail -n 20 "$G/dockerd.log"; fail "dockerd"; }
t dockerd up
docker import -c 'ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin' -c 'CMD ["sleep","2147483647"]' \
  - "$IMAGE" <"$G/cache/image.tar" >/dev/null || fail "docker import"
say "ready $NAME after $(cut -d' ' -f1 /proc/uptime)s: $ADDR kernel $(uname -r) docker $(docker info --format '{{.ServerVersion}}')"

# ---- PID 1: reap whatever is orphaned
trap '' TERM INT HUP
while :; do
  sleep 3600 &
  wait
done
