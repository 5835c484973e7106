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

/// The fixed script that deletes one end of a veth pair (argument `$1`): deleting either end
/// removes both, so an end that is already gone counts as deleted. Any other failure (the
/// device is still there) fails the step with `ip`'s message.
pub const DELETE_VETH_SCRIPT: &str =
    "ip link del dev \"$1\" 2>&1 || ! ip link show dev \"$1\" >/dev/null 2>&1";

/// The fixed script that deletes a route (`$1` the destination, then `dev D [via G]`): a route
/// already gone — another attachment of the container took the destination over in the same
/// pass — counts as deleted; a route still there fails the step with `ip`'s message.
pub const DELETE_ROUTE_SCRIPT: &str = "p=$1; shift; ip route del \"$p\" \"$@\" 2>&1 || \
     [ -z \"$(ip route show exact \"$p\" \"$@\" 2>/dev/null)\" ]";

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
        Action::DeleteVeth { name } => {
            s(&[&"sh", &"-c", &DELETE_VETH_SCRIPT, &"delete-veth", name])
        }
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
        Action::AddConnectedRoute { dev, address } => s(&[
            &"ip",
            &"route",
            &"replace",
            &address.trunc(),
            &"dev",
            dev,
            &"proto",
            &"kernel",
            &"scope",
            &"link",
            &"src",
            &address.addr(),
        ]),
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
        Action::DeleteRoute { dev, to, via } => {
            let mut v = s(&[&"sh", &"-c", &DELETE_ROUTE_SCRIPT, &"delete-route", to]);
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
    let command = match (&step.action, &step.ns) {
        (Action::CheckContainer, _) => argv(step).join(" "),
        (action, Namespace::Host) => readable(action),
        (action, Namespace::Container { pid, .. }) => {
            format!("nsenter -t {pid} -n {}", readable(action))
        }
    };
    format!("{}{place}: {command}", step.object)
}

/// A step's command as a person would type it: the steps that run a fixed script are shown as
/// the commands the script runs, the others as their argument vector.
fn readable(action: &Action) -> String {
    match action {
        Action::Rename { from, to } => {
            format!("ip link set dev {from} down && ip link set dev {from} name {to}")
        }
        Action::DeleteVeth { name } => {
            format!("ip link del dev {name} (done if it went with its peer)")
        }
        Action::DeleteRoute { dev, to, via } => {
            let via = via.map(|v| format!(" via {v}")).unwrap_or_default();
            format!("ip route del {to}{via} dev {dev} (done if already gone)")
        }
        other => action_argv(other, &Namespace::Host).join(" "),
    }
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
        Action::DeleteLink { name } | Action::DeleteVeth { name } => Some(name),
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

    /// Runs the veth delete script against a stand-in `ip` whose `link del` and `link show`
    /// answer as told; returns the exit status and output.
    fn delete_veth_with(del_ok: bool, still_there: bool) -> (bool, String) {
        let dir = tempfile::tempdir().unwrap();
        let fake = format!(
            "#!/bin/sh\ncase \"$2\" in\n  del) {};;\n  show) exit {};;\nesac\n",
            if del_ok {
                "exit 0"
            } else {
                "echo 'Cannot find device \"'\"$4\"'\"' >&2; exit 1"
            },
            if still_there { 0 } else { 1 }
        );
        let ip = dir.path().join("ip");
        std::fs::write(&ip, fake).unwrap();
        std::fs::set_permissions(&ip, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let step = Step {
            ns: Namespace::Host,
            action: Action::DeleteVeth {
                name: IfName::new("gv-1").unwrap(),
            },
            object: "test".into(),
        };
        let words = argv(&step);
        let out = std::process::Command::new(&words[0])
            .args(&words[1..])
            .env("PATH", format!("{}:/usr/bin:/bin", dir.path().display()))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    }

    #[test]
    fn deleting_a_veth_end_already_gone_with_its_peer_succeeds() {
        assert!(delete_veth_with(true, false).0);
        // Deleting its peer removed it: the outcome (no such device) holds.
        assert!(delete_veth_with(false, false).0);
        // Still there after a failed delete: the step fails with ip's message.
        let (ok, text) = delete_veth_with(false, true);
        assert!(!ok);
        assert!(text.contains("Cannot find device \"gv-1\""), "{text}");
    }

    #[test]
    fn a_pair_deleted_end_by_end_applies_and_a_later_failure_is_reported() {
        let step = |action| Step {
            ns: Namespace::Host,
            action,
            object: "test".into(),
        };
        let (host, peer) = (IfName::new("gv-1").unwrap(), IfName::new("gc-1").unwrap());
        let plan = Plan {
            steps: vec![
                step(Action::DeleteVeth { name: host }),
                step(Action::DeleteVeth { name: peer }),
                step(Action::DeleteLink {
                    name: IfName::new("gm-1").unwrap(),
                }),
            ],
            issues: vec![],
        };
        // A stand-in `ip` that knows one veth pair: deleting either end removes both, and
        // there is no gm-1.
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("links");
        std::fs::write(&state, "gv-1\ngc-1\n").unwrap();
        let fake = format!(
            "#!/bin/sh\nf={}\ngrep -qx \"$4\" \"$f\" || {{ echo \"Cannot find device \\\"$4\\\"\"; exit 1; }}\n\
             [ \"$2\" = del ] && : > \"$f\"\nexit 0\n",
            state.display()
        );
        let ip = dir.path().join("ip");
        std::fs::write(&ip, fake).unwrap();
        std::fs::set_permissions(&ip, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        // The steps part of the apply script, on the stand-in's PATH.
        let script = apply_script(&plan, &[]);
        let steps = &script[..script.find(PROBE_MARK).unwrap()];
        let steps = steps.replacen("export LC_ALL=C PATH=", "export LC_ALL=C IGNORED=", 1);
        let out = std::process::Command::new("sh")
            .args(["-c", &steps])
            .env("PATH", format!("{}:/usr/bin:/bin", dir.path().display()))
            .output()
            .unwrap();
        let outcome = crate::engine::parse_apply_output(&String::from_utf8_lossy(&out.stdout));
        assert_eq!(outcome.applied, 2, "{outcome:?}");
        let (n, detail) = outcome.failed.expect("the third step fails");
        assert_eq!(n, 2);
        assert!(detail.contains("Cannot find device \"gm-1\""), "{detail}");
    }
}
