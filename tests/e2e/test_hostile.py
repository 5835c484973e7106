"""Bad and hostile input (issue 7): every string field of every kind with shell
metacharacters, option-like values, newlines, over-long and non-ASCII values is rejected with
the field named, and no SSH login happens on any host; private keys never show up in any
output, log, status or Event."""

import json
import re
import time

from conftest import (HOSTS, HOSTS_YAML, STATE, accepted_logins, attach_doc, gremesh, mesh_doc, write)

HOSTILE = ["a;reboot", "-oProxyCommand=touch${IFS}/tmp/pwned", "a\nb", "x" * 300, "héllo", "$(id)",
           "a b", "`id`", "a'b", "a|b", "../etc"]

BASE_HOST = {"address": "10.200.0.11", "port": 22, "user": "root",
             "sshKeySecretRef": {"name": "gremesh-lab-ssh", "key": "ssh-privatekey"},
             "hostKey": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPxjaj/e5Kq6yiozbR1QV0n3Io4ux0Y6v0N4KrLVOaK3",
             "underlayAddress": "10.200.0.11"}

# (kind, field path shown in the error, how to place the value into the objects)
FIELDS = [
    ("DockerHost", "spec.address", lambda o, v: o["host"]["spec"].update(address=v)),
    ("DockerHost", "spec.user", lambda o, v: o["host"]["spec"].update(user=v)),
    ("DockerHost", "spec.hostKey", lambda o, v: o["host"]["spec"].update(hostKey=v)),
    ("DockerHost", "spec.sshKeySecretRef.name", lambda o, v: o["host"]["spec"]["sshKeySecretRef"].update(name=v)),
    ("DockerHost", "spec.sshKeySecretRef.key", lambda o, v: o["host"]["spec"]["sshKeySecretRef"].update(key=v)),
    ("DockerHost", "metadata.name", lambda o, v: o["host"]["metadata"].update(name=v)),
    ("GreMesh", "metadata.name", lambda o, v: o["mesh"]["metadata"].update(name=v)),
    ("GreMesh", "spec.hosts[0].name", lambda o, v: o["mesh"]["spec"]["hosts"][0].update(name=v)),
    ("GreMesh", "spec.bridge", lambda o, v: o["mesh"]["spec"].update(bridge=v)),
    ("GreMesh", "spec.dockerNetwork.name", lambda o, v: o["mesh"]["spec"].update(dockerNetwork={"name": v})),
    ("ContainerAttachment", "metadata.name", lambda o, v: o["att"]["metadata"].update(name=v)),
    ("ContainerAttachment", "spec.mesh", lambda o, v: o["att"]["spec"].update(mesh=v)),
    ("ContainerAttachment", "spec.host", lambda o, v: o["att"]["spec"].update(host=v)),
    ("ContainerAttachment", "spec.container", lambda o, v: o["att"]["spec"].update(container=v)),
    ("ContainerAttachment", "spec.interface", lambda o, v: o["att"]["spec"].update(interface=v)),
    ("ContainerAttachment", "spec.mac", lambda o, v: o["att"]["spec"].update(mac=v)),
]


def objects():
    return {
        "host": {"apiVersion": "gremesh.io/v1alpha1", "kind": "DockerHost", "metadata": {"name": "host-a"},
                 "spec": json.loads(json.dumps(BASE_HOST))},
        "mesh": {"apiVersion": "gremesh.io/v1alpha1", "kind": "GreMesh", "metadata": {"name": "m1"},
                 "spec": {"hosts": [{"name": "host-a", "subnet": "10.10.1.0/24"}], "encapsulation": "vxlan",
                          "key": 42, "network": "10.10.0.0/16"}},
        "att": {"apiVersion": "gremesh.io/v1alpha1", "kind": "ContainerAttachment", "metadata": {"name": "web-a"},
                "spec": {"mesh": "m1", "host": "host-a", "container": "web-a", "address": "10.10.1.10"}},
    }


def test_every_string_field_rejects_hostile_values_before_any_login(lab_up, tmp_path):
    logins = {h: accepted_logins(h) for h in HOSTS}
    secret = HOSTS_YAML.read_text().split("---")[0]
    misses = []
    for kind, field, place in FIELDS:
        for value in HOSTILE:
            objs = objects()
            place(objs, value)
            docs = [secret] + [json.dumps(o) for o in objs.values()]
            path = write(tmp_path, "hostile.yaml", "\n---\n".join(docs))
            res = gremesh("apply", "-f", str(path))
            # One rejection line naming the kind and the whole field path.
            named = re.search(rf"- {kind} .{{0,400}}?: {re.escape(field)}: ", res.stderr, re.S)
            if res.returncode != 2 or not named:
                misses.append((kind, field, value[:40], res.returncode, res.stderr[-300:]))
    assert misses == []
    assert {h: accepted_logins(h) for h in HOSTS} == logins
    assert not (STATE.parent / "pwned").exists() and not __import__("os").path.exists("/tmp/pwned")


def key_lines():
    """The base64 body lines of the lab's private key (what must never leak)."""
    text = (STATE / "id_ed25519").read_text()
    return [l for l in text.splitlines() if l and not l.startswith("-----")]


def assert_no_key(text, where):
    for line in key_lines():
        assert line not in text, f"private key material found in {where}"


def test_private_keys_never_appear_in_outputs_logs_status_or_events(running, tmp_path):
    c = running
    texts = {}
    # CLI failures of every kind the suite knows: wrong host key, unreachable, bad key, rejected.
    docs = HOSTS_YAML.read_text().split("---")
    other_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPxjaj/e5Kq6yiozbR1QV0n3Io4ux0Y6v0N4KrLVOaK3"
    wrong_key = [re.sub(r"hostKey: .*", f'hostKey: "{other_key}"', d) if "name: host-b" in d else d for d in docs]
    unreachable = [d.replace("address: 10.200.0.13", "address: 10.200.0.99") if "name: host-c" in d else d for d in docs]
    for name, variant in (("wrongkey", wrong_key), ("unreachable", unreachable)):
        path = write(tmp_path, f"{name}.yaml", "---".join(variant))
        res = gremesh("--log", "debug", "apply", "-f", str(path), "-f", str(write(tmp_path, "m.yaml", mesh_doc(HOSTS))),
                      "--connect-timeout", "2s")
        texts[name] = res.stdout + res.stderr
    bogus = write(tmp_path, "bogus.key", "-----BEGIN OPENSSH PRIVATE KEY-----\nbm90IGEga2V5\n-----END OPENSSH PRIVATE KEY-----\n")
    res = gremesh("--log", "debug", "apply", "-i", str(bogus), "-f", str(HOSTS_YAML), "-f",
                  str(write(tmp_path, "m2.yaml", mesh_doc(HOSTS))))
    texts["badkey"] = res.stdout + res.stderr
    assert "bm90IGEga2V5" not in texts["badkey"]

    # The operator, with one host unreachable: its log, the statuses and the Events.
    c.kubectl("apply", "-f", "-", stdin="---".join(unreachable))
    c.kubectl("apply", "-f", "-", stdin=mesh_doc(HOSTS) + attach_doc("host-a"))
    time.sleep(8)
    texts["statuses"] = c.kubectl("get", "gremesh,containerattachments,dockerhosts", "-o", "json").stdout
    texts["events"] = c.kubectl("get", "events", "-o", "json").stdout
    texts["operator-log"] = "".join(p.read_text() for p in c.workdir.glob("op-*.log"))
    c.kubectl("apply", "-f", str(HOSTS_YAML))
    for where, text in texts.items():
        assert_no_key(text, where)
    assert "host-c" in texts["statuses"]  # the failure itself is reported
