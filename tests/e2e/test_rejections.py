"""Lab end-to-end: specs gremesh must refuse, and hosts it must leave untouched."""

import json
import re

from conftest import (HOSTS, accepted_logins, attachment_yaml, gremesh, gremesh_links, links, on_host,
                      mesh_yaml, write, HOSTS_YAML)


def snapshot():
    return {h: sorted((l["ifname"], l.get("ifalias", ""), l["mtu"]) for l in links(h)) for h in HOSTS}


def test_invalid_manifest_runs_no_command(fresh, tmp_path):
    bad = mesh_yaml(network="10.10.0.0/16") + attachment_yaml(
        "web-a", "host-a", "web-a;reboot", "10.10.1.10")
    logins = {h: accepted_logins(h) for h in HOSTS}
    res = gremesh("apply", "-f", str(HOSTS_YAML), "-f", str(write(tmp_path, "bad.yaml", bad)))
    assert res.returncode == 2, res
    assert "ContainerAttachment web-a: spec.container" in res.stderr, res.stderr
    assert "no host was touched" in res.stderr
    assert {h: accepted_logins(h) for h in HOSTS} == logins


def test_two_attachments_of_one_container_in_one_subnet_are_rejected(fresh, tmp_path):
    """S12: would fail on the host with "File exists"; must be refused before any change."""
    text = mesh_yaml() + attachment_yaml("web-a", "host-a", "web-a", "10.10.1.10") + \
        attachment_yaml("web-a2", "host-a", "web-a", "10.10.1.11", extra="  interface: eth2\n")
    logins = {h: accepted_logins(h) for h in HOSTS}
    before = snapshot()
    res = gremesh("apply", "-f", str(HOSTS_YAML), "-f", str(write(tmp_path, "s12.yaml", text)))
    assert res.returncode == 2
    assert "ContainerAttachment web-a2: spec.container" in res.stderr
    assert "already attached to mesh m1 by web-a" in res.stderr
    assert {h: accepted_logins(h) for h in HOSTS} == logins
    assert snapshot() == before


def test_gretap_on_a_kernel_without_gre_fails_clearly_and_changes_nothing(fresh, tmp_path):
    before = snapshot()
    text = mesh_yaml(encapsulation="gretap")
    res = gremesh("apply", "-o", "json", "-f", str(HOSTS_YAML), "-f",
                  str(write(tmp_path, "gre.yaml", text)))
    assert res.returncode == 1, res
    report = json.loads(res.stdout)
    for h in report["hosts"]:
        assert "error" not in h and h["planned"] == [] and h["applied"] == 0, h
        [issue] = h["issues"]
        assert issue["reason"] == "Unsupported", issue
        assert "needs gretap" in issue["message"] and "no GRE support" in issue["message"], issue
    assert snapshot() == before
    assert all(gremesh_links(h) == [] for h in HOSTS)


def test_foreign_vxlan_in_the_way_is_reported_and_left_alone(fresh, tmp_path):
    """A device gremesh did not create that holds the mesh's VNI and port blocks that host only."""
    on_host("host-b", "ip", "link", "add", "admins-vx", "type", "vxlan", "id", "42", "dstport",
            "4789", "local", "10.200.0.12")
    try:
        res = gremesh("apply", "-o", "json", "-f", str(HOSTS_YAML), "-f",
                      str(write(tmp_path, "m.yaml", mesh_yaml())))
        report = json.loads(res.stdout)
        b = next(h for h in report["hosts"] if h["host"] == "host-b")
        assert any(i["reason"] == "ForeignDevice" and "admins-vx" in i["message"] for i in b["issues"]), b
        assert not report["meshes"][0]["ready"]
        others = [h for h in report["hosts"] if h["host"] != "host-b"]
        assert all(h["converged"] for h in others), others
        admins = [l for l in links("host-b") if l["ifname"] == "admins-vx"]
        assert admins and "ifalias" not in admins[0], admins
    finally:
        on_host("host-b", "ip", "link", "del", "admins-vx", check=False)


def test_host_key_mismatch_runs_nothing_on_that_host(fresh, tmp_path):
    """A host presenting another key than the pinned one gets no command; the others converge."""
    text = HOSTS_YAML.read_text()
    wrong = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPxjaj/e5Kq6yiozbR1QV0n3Io4ux0Y6v0N4KrLVOaK3"
    docs = text.split("---")
    docs = [re.sub(r'hostKey: .*', f'hostKey: "{wrong}"', d) if "name: host-b" in d else d for d in docs]
    hosts = write(tmp_path, "hosts.yaml", "---".join(docs))
    logins = accepted_logins("host-b")
    res = gremesh("apply", "-o", "json", "-f", str(hosts), "-f",
                  str(write(tmp_path, "m.yaml", mesh_yaml())))
    assert res.returncode == 1
    report = json.loads(res.stdout)
    b = next(h for h in report["hosts"] if h["host"] == "host-b")
    assert "host key mismatch" in b["error"] and "SHA256:" in b["error"], b
    assert b["roundTrips"] == 0 and b["applied"] == 0
    assert accepted_logins("host-b") == logins
    assert gremesh_links("host-b") == []
    assert all(h["converged"] for h in report["hosts"] if h["host"] != "host-b")
