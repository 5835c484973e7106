"""Lab end-to-end: sshd limits that the classic tools trip over (S08, S09)."""

import socket
import threading
import time

from conftest import STATE, apply, lab, mesh_yaml, write


def sshd_extra(host, text):
    path = STATE / host / "sshd_extra.conf"
    if text:
        path.write_text(text)
    elif path.exists():
        path.unlink()
    lab("reload-sshd", host)


def test_one_session_per_connection_still_converges(fresh, tmp_path):
    """S08: `MaxSessions 1` — observe and apply run one after the other over one connection."""
    sshd_extra("host-b", "MaxSessions 1\n")
    try:
        manifest = write(tmp_path, "m.yaml", mesh_yaml())
        _, report = apply(manifest)
        assert all(m["ready"] for m in report["meshes"]), report
        _, again = apply(manifest)
        assert all(h["planned"] == [] for h in again["hosts"]), again
    finally:
        sshd_extra("host-b", "")


def test_few_unauthenticated_connections_are_retried_with_backoff(fresh, tmp_path):
    """S09: `MaxStartups 2` with both slots taken by someone else when gremesh connects: the
    connection is refused, retried with back-off, and the mesh still becomes ready."""
    sshd_extra("host-b", "MaxStartups 2\n")
    holders = []
    try:
        for _ in range(2):
            s = socket.create_connection(("10.200.0.12", 22), timeout=5)
            s.recv(64)  # the banner: the connection now counts as unauthenticated
            holders.append(s)
        threading.Timer(1.2, lambda: [s.close() for s in holders]).start()
        start = time.time()
        res, report = apply(write(tmp_path, "m.yaml", mesh_yaml()), extra=("--log", "gremesh=debug"))
        assert all(m["ready"] for m in report["meshes"]), res.stdout
        assert "retrying SSH connect" in res.stderr and "host-b" in res.stderr
        assert time.time() - start < 30
    finally:
        for s in holders:
            s.close()
        sshd_extra("host-b", "")
