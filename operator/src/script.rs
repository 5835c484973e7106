//! Script: plan steps rendered as commands, and the one shell script that carries a whole
//! plan to a host in a single SSH round trip.
//!
//! Every argument comes from a typed value ([`IfName`], addresses, numbers, [`Mac`],
//! [`Marker`] built from validated names, [`ContainerId`]); on top of that every argument is
//! single-quoted, so even a value that slipped past validation could not be parsed by the
//! remote shell as anything but one word. The script is sent on standard input to a fixed
//! remote command (`sh -s`): no spec value is ever part of the SSH command line.

use crate::addressing::IfName;
use crate::observe::probe_with_health;
use crate::plan::{Action, Namespace, Plan, Step};

/// The fixed script that renames a link (it must be down first); arguments are `$1`, `$2`.
pub const RENAME_SCRIPT: &str = "ip link set dev \"$1\" down && ip link set dev \"$1\" name \"$2\"";

/// Marker line printed before the post-apply probe output.
pub const PROBE_MARK: &str = "@@gremesh-after";

const PRELUDE: &str = r#"export LC_ALL=C PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
run() {
  n=$1; shift
  out=$("$@" 2>&1); rc=$?
  if [ "$rc" -ne 0 ]; then
    printf 'gremesh-failed %s %s\n' "$n" "$rc"
    printf '%s\n' "$out" | head -c 2000
    printf '\ngremesh-failed-end\n'
    return 1
  fi
  printf 'gremesh-ok %s\n' "$n"
}
same_pid() { [ "$(docker inspect --format '{{.State.Running}} {{.State.Pid}}' "$1" 2>&1)" = "true $2" ] || { echo "container $1 no longer runs with PID $2"; return 1; }; }
"#;

/// The argument vector of one step, without quoting.
pub fn argv(step: &Step) -> Vec<String> {
    let inner = action_argv(&step.action, &step.ns);
    match (&step.ns, &step.action) {
        (_, Action::CheckContainer) | (Namespace::Host, _) => inner,
        (Namespace::Container { pid, .. }, _) => {
            let mut v = vec!["nsenter".into(), "-t".into(), pid.to_string(), "-n".into()];
            v.extend(inner);
            v
        }
    }
}

fn s(parts: &[&dyn ToString]) -> Vec<String> {
    parts.iter().map(|p| p.to_string()).collect()
}

fn action_argv(action: &Action, ns: &Namespace) -> Vec<String> {
    match action {
        Action::CheckContainer => match ns {
            Namespace::Container { id, pid } => s(&[&"same_pid", &id.as_str(), pid]),
            Namespace::Host => s(&[&"true"]),
        },
        Action::DeleteLink { name } => s(&[&"ip", &"link", &"del", &"dev", name]),
        Action::AddBridge {
            name,
            mac,
            mtu,
            stp,
        } => s(&[
            &"ip",
            &"link",
            &"add",
            &"name",
            name,
            &"address",
            mac,
            &"mtu",
            mtu,
            &"type",
            &"bridge",
            &"stp_state",
            &u8::from(*stp),
        ]),
        Action::AddGretap {
            name,
            local,
            remote,
            key,
            mtu,
        } => s(&[
            &"ip", &"link", &"add", &"name", name, &"mtu", mtu, &"type", &"gretap", &"local",
            local, &"remote", remote, &"key", key, &"ttl", &64,
        ]),
        Action::AddVxlan {
            name,
            vni,
            local,
            port,
            mtu,
        } => s(&[
            &"ip", &"link", &"add", &"name", name, &"mtu", mtu, &"type", &"vxlan", &"id", vni,
            &"local", local, &"dstport", port, &"ttl", &64,
        ]),
        Action::AddVeth {
            name,
            peer,
            pid,
            mtu,
        } => s(&[
            &"ip", &"link", &"add", &"name", name, &"mtu", mtu, &"type", &"veth", &"peer", &"name",
            peer, &"mtu", mtu, &"netns", pid,
        ]),
        Action::Rename { from, to } => {
            // `ip link set` cannot rename an up link; both halves go in one step.
            s(&[&"sh", &"-c", &RENAME_SCRIPT, &"rename", from, to])
        }
        Action::SetLink {
            name,
            mtu,
            mac,
            marker,
            master,
        } => {
            let mut v = s(&[&"ip", &"link", &"set", &"dev", name]);
            if let Some(mtu) = mtu {
                v.extend(s(&[&"mtu", mtu]));
            }
            if let Some(mac) = mac {
                v.extend(s(&[&"address", mac]));
            }
            if let Some(marker) = marker {
                v.extend(s(&[&"alias", marker]));
            }
            if let Some(master) = master {
                v.extend(s(&[&"master", master]));
            }
            v.push("up".into());
            v
        }
        Action::Up { name } => s(&[&"ip", &"link", &"set", &"dev", name, &"up"]),
        Action::SetIsolated { name, on } => s(&[
            &"bridge",
            &"link",
            &"set",
            &"dev",
            name,
            &"isolated",
            &if *on { "on" } else { "off" },
        ]),
        Action::SetStp { name, on } => s(&[
            &"ip",
            &"link",
            &"set",
            &"dev",
            name,
            &"type",
            &"bridge",
            &"stp_state",
            &u8::from(*on),
        ]),
        Action::AddAddress { dev, address } => s(&[&"ip", &"addr", &"add", address, &"dev", dev]),
        Action::DelAddress { dev, address } => s(&[&"ip", &"addr", &"del", address, &"dev", dev]),
        Action::AddFlood { dev, dst } => s(&[
            &"bridge",
            &"fdb",
            &"append",
            &"00:00:00:00:00:00",
            &"dev",
            dev,
            &"dst",
            dst,
            &"permanent",
        ]),
        Action::DelFlood { dev, dst } => s(&[
            &"bridge",
            &"fdb",
            &"del",
            &"00:00:00:00:00:00",
            &"dev",
            dev,
            &"dst",
            dst,
        ]),
        Action::CreateDockerNetwork {
            name,
            mesh,
            subnet,
            ip_range,
            gateway,
            bridge,
            mtu,
        } => s(&[
            &"docker",
            &"network",
            &"create",
            &"--driver",
            &"bridge",
            &format!("--label=gremesh.io/mesh={mesh}"),
            &format!("--subnet={subnet}"),
            &format!("--ip-range={ip_range}"),
            &format!("--gateway={gateway}"),
            &format!("--opt=com.docker.network.bridge.name={bridge}"),
            &format!("--opt=com.docker.network.driver.mtu={mtu}"),
            &"--opt=com.docker.network.bridge.enable_ip_masquerade=false",
            &"--",
            name,
        ]),
        Action::RemoveDockerNetwork { name } => s(&[&"docker", &"network", &"rm", &"--", name]),
        Action::ReplaceRoute { dev, to, via } => {
            let mut v = s(&[&"ip", &"route", &"replace", to]);
            if let Some(via) = via {
                v.extend(s(&[&"via", via]));
            }
            v.extend(s(&[&"dev", dev]));
            v
        }
    }
}

/// Single-quotes a word for a POSIX shell.
pub fn quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// One line of a human-readable plan: where, what, and the command.
pub fn describe(step: &Step) -> String {
    let place = match &step.ns {
        Namespace::Host => String::new(),
        Namespace::Container { id, pid } => {
            format!(" [container {} pid {pid}]", &id.as_str()[..12])
        }
    };
    format!("{}{place}: {}", step.object, argv(step).join(" "))
}

/// The whole apply script: every step in order, stopping at the first failure, then the
/// probe so the state after the change comes back in the same round trip.
pub fn apply_script(plan: &Plan, health: &[std::net::Ipv4Addr]) -> String {
    let mut script = String::from(PRELUDE);
    script.push_str("apply() {\n");
    for (n, step) in plan.steps.iter().enumerate() {
        let words: Vec<String> = argv(step).iter().map(|w| quote(w)).collect();
        script.push_str(&format!("  run {n} {} || return 1\n", words.join(" ")));
    }
    script.push_str("}\napply\n");
    script.push_str(&format!("echo '{PROBE_MARK}'\n"));
    // Peers may still be converging: give each health ping a few tries.
    script.push_str(&probe_with_health(health, 3));
    script
}

/// Names of links that a step deletes, for summaries.
pub fn deleted_link(step: &Step) -> Option<&IfName> {
    match &step.action {
        Action::DeleteLink { name } => Some(name),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_quotes() {
        assert_eq!(quote("a'b"), r"'a'\''b'");
    }
}
