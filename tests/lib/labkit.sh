# Shared pieces of the two labs (tests/lab/lab.sh: network namespaces; tests/vm/vmlab.sh: QEMU
# guests): package installs, the lock, the underlay bridge, SSH keys and the DockerHost
# manifests. Sourced, not run; the caller defines log() and die().

# kit_apt_install LOGFILE PACKAGE...   (retries once after apt-get update)
kit_apt_install() {
  local logf=$1; shift
  log "installing: $*"
  if ! apt-get install -y --no-install-recommends -o DPkg::Lock::Timeout=300 "$@" \
    </dev/null >"$logf" 2>&1; then
    log "apt-get install failed; running apt-get update and retrying"
    apt-get update </dev/null >>"$logf" 2>&1 || true
    apt-get install -y --no-install-recommends -o DPkg::Lock::Timeout=300 "$@" \
      </dev/null >>"$logf" 2>&1 ||
      { tail -n 30 "$logf" >&2; die "apt-get install $* failed"; }
  fi
}

# kit_take_lock STATE   fd 9 holds the lock, in a file next to the state dir (which `down`
# removes); daemons must be started with fd 9 closed.
kit_take_lock() {
  mkdir -p "$(dirname "$1")"
  exec 9>>"${1}.lock"
  flock -w 900 9 || die "could not get the lock ${1}.lock"
}

# kit_fw_rule -C|-I|-D TOOL BRIDGE COMMENT   (accept bridged traffic between the lab's ports)
kit_fw_rule() {
  "$2" "$1" FORWARD -i "$3" -o "$3" -m comment --comment "$4" -j ACCEPT
}

# kit_ensure_bridge BRIDGE MAC ADDRESS/PREFIX FW_COMMENT   the underlay bridge, idempotent
kit_ensure_bridge() {
  local bridge=$1 mac=$2 addr=$3 comment=$4 t f
  if ! ip link show "$bridge" >/dev/null 2>&1; then
    ip link add "$bridge" address "$mac" type bridge stp_state 0 forward_delay 0
  fi
  ip link set "$bridge" mtu 1500 up
  if ! ip -4 addr show dev "$bridge" | grep -qF " ${addr} "; then
    ip addr add "$addr" dev "$bridge"
  fi
  # With br_netfilter loaded, bridged frames traverse iptables FORWARD (which a system Docker
  # sets to DROP): let the lab's underlay traffic through.
  for t in iptables ip6tables; do
    f=/proc/sys/net/bridge/bridge-nf-call-$t
    if [[ -r $f && $(cat "$f") == 1 ]] && command -v "$t" >/dev/null; then
      kit_fw_rule -C "$t" "$bridge" "$comment" 2>/dev/null ||
        kit_fw_rule -I "$t" "$bridge" "$comment" 2>/dev/null ||
        log "warning: could not add a $t FORWARD accept rule for $bridge"
    fi
  done
}

# kit_ensure_key FILE COMMENT   an ed25519 key pair FILE / FILE.pub, made once
kit_ensure_key() {
  if [[ ! -s $1 || ! -s $1.pub ]]; then
    rm -f "$1" "$1.pub"
    ssh-keygen -q -t ed25519 -N '' -C "$2" -f "$1"
  fi
  chmod 0600 "$1"
}

# kit_pubkey FILE.pub   prints "ssh-ed25519 AAAA..." without the comment
kit_pubkey() {
  local a b _
  read -r a b _ <"$1"
  printf '%s %s' "$a" "$b"
}

# kit_write_manifests OUT HEADER SECRET KEYFILE NAMES_FN IP_FN PUBKEY_FN
# Writes the key Secret and one DockerHost per name that NAMES_FN prints (address and
# underlay from IP_FN NAME, pinned host key from PUBKEY_FN NAME), atomically.
kit_write_manifests() {
  local out=$1 header=$2 secret=$3 keyfile=$4 names_fn=$5 ip_fn=$6 pubkey_fn=$7 line name ip
  {
    cat <<EOF
# $header
apiVersion: v1
kind: Secret
metadata: {name: $secret}
type: Opaque
stringData:
  ssh-privatekey: |
EOF
    while IFS= read -r line; do printf '    %s\n' "$line"; done <"$keyfile"
    while read -r name; do
      ip=$("$ip_fn" "$name")
      cat <<EOF
---
apiVersion: gremesh.io/v1alpha1
kind: DockerHost
metadata: {name: $name}
spec:
  address: $ip
  port: 22
  user: root
  sshKeySecretRef: {name: $secret, key: ssh-privatekey}
  hostKey: "$("$pubkey_fn" "$name")"
  underlayAddress: $ip
EOF
    done < <("$names_fn")
  } >"$out.tmp"
  mv -f "$out.tmp" "$out"
}
