"""Lab end-to-end: specs gremesh must refuse, and hosts it must leave untouched."""

import json

from conftest import (HOSTS, accepted_logins, attachment_yaml, gremesh, gremesh_links, links,
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
        assert "needs gretap" in h["error"] and "no GRE support" in h["error"], h
        assert h["applied"] == 0
    assert snapshot() == before
    assert all(gremesh_links(h) == [] for h in HOSTS)
