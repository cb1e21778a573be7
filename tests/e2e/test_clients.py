"""Third-party clients that nobody here wrote, over both paths."""
import os
import re
import shutil
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def test_memccapable_ascii_conformance(clean):
    # libmemcached's own ASCII protocol conformance checker
    r = clean.netns_run("memccapable", "-h", clean.ip, "-p", "11211", "-a", timeout=120)
    out = r.stdout + r.stderr
    assert "All tests passed" in out, out
    assert "[FAIL]" not in out


def test_memccp_memccat_over_tcp(clean, tmp_path):
    f = tmp_path / "payload.bin"
    data = os.urandom(300000)
    f.write_bytes(data)
    srv = f"--servers=127.0.0.1:{clean.tcp_port}"
    r = __import__("subprocess").run(["memccp", srv, str(f)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = __import__("subprocess").run(["memccat", srv, "payload.bin"], capture_output=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout == data + b"\n"  # memccat ends the value with a newline


def test_php_memcache_udp_multiget_sequence_numbers(clean):
    r = clean.netns_run("php", os.path.join(HERE, "clients", "php_udp_multiget.php"), clean.ip, "11211")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "multi-get ok=50" in out, out
    assert "single=ok" in out and "miss=ok" in out, out
    # any "UDP packet loss" or server failure notice means a bad datagram
    assert "packet loss" not in out and "failed with" not in out, out
    # the gets really came over UDP
    st = clean.stats()
    assert int(st["cmd_get"]) >= 52


def test_memcaslap_udp_load(clean):
    r = clean.netns_run("memcaslap", "-s", f"{clean.ip}:11211", "-U", "-x", "20000", "-c", "4",
                        "-T", "1", "-X", "64", "-S", "1s", timeout=180)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    m = re.search(r"Run time:.*Ops:\s*(\d+)", out, re.S)
    assert m and int(m.group(1)) >= 20000, out
    # memaslap over UDP counts lost and bad replies; none on a quiet link
    assert "udp" in out.lower() or "Ops" in out
    st = clean.stats()
    assert int(st["cmd_get"]) + int(st["cmd_set"]) >= 20000
