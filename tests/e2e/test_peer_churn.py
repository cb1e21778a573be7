"""A memif peer that dies under load must not take the server with it.

DPDK 22.11's memif driver unmaps the peer's rings from its interrupt thread
while a datapath thread may be inside a burst on them; the port guard
(include/sluice/portguard.h) makes that unmap wait for the datapath. Both
of our memif servers are checked: sluice-bench's reflector (which, without
the guard, died by the 2nd to 6th kill in every try) and sluiced with
--busy-poll. The server shares one CPU with DPDK's interrupt thread, as in
the benchmarks, so the teardown runs while the server is preempted at any
point of its loop; the generators get the other CPU. After the kills, a
new client must be served in full."""
import json
import os
import random
import signal
import subprocess
import sys
import time

from sluice_harness import BUILD, ROOT, free_tcp_port

sys.path.insert(0, os.path.join(ROOT, "perf"))
from perflib import start, stats, stop  # noqa: E402

BENCH = os.path.join(BUILD, "perf", "sluice-bench")
SLUICED = os.path.join(BUILD, "sluiced")
KILLS = 15


def server_log(tmp, name):
    """Where a server's output goes: SLUICE_LOGDIR when set (the sanitizer
    run greps it for reports), else the test's own directory."""
    d = os.environ.get("SLUICE_LOGDIR")
    return os.path.join(d, f"churn-{name}.log") if d else str(tmp / f"{name}.log")


def eal(prefix):
    return ["--no-pci", "--no-huge", "-m", "512", "--log-level", "*:error", "--file-prefix", prefix]


def client(sock, prefix, out, *extra):
    return ["taskset", "-c", "1", BENCH] + eal(prefix) + [
        "--lcores", "0@1", "--vdev", f"net_memif0,role=client,socket={sock}", "--",
        "--mode", "dpdk", "--server-ip", "198.18.0.1", "--client-ip", "198.18.0.2",
        "--keys", "1000", "--key-size", "16", "--value-size", "64", "--window", "128",
        "--out", out] + list(extra)


def kill_clients_under_load(server, sock, tmp):
    """Start a generator KILLS times and kill -9 it mid-run; the server must
    outlive every one."""
    rnd = random.Random(7)
    for i in range(KILLS):
        g = subprocess.Popen(client(sock, "churng", str(tmp / "killed.json"), "--duration", "5"),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(0.5 + rnd.random() * 0.4)
        finally:
            g.send_signal(signal.SIGKILL)
            g.wait()
        assert server.poll() is None, f"server died after {i + 1} killed clients " \
                                      f"(exit {server.returncode})"


def served_in_full(sock, tmp, *extra):
    """A well-behaved client after the churn: it connects and every request
    is answered."""
    out = tmp / "after.json"
    for _ in range(5):
        r = subprocess.run(client(sock, "churnc", str(out), "--duration", "1", *extra),
                           capture_output=True, text=True, timeout=120)
        # a server may refuse the next client for a moment after the last left
        if r.returncode == 0 or "Failed to connect socket" not in r.stdout + r.stderr:
            break
        time.sleep(1)
    assert r.returncode == 0, r.stdout + r.stderr
    got = json.load(open(out))
    assert got["done"] > 1000 and got["timeouts"] == 0 and got["bad"] == 0, got
    return got


def test_reflector_outlives_clients_killed_under_load(tmp_path):
    sock = f"/run/sluice-churn-r{os.getpid()}.sock"
    p = start(["taskset", "-c", "0", BENCH] + eal("churnr") + [
        "--lcores", "0@0", "--vdev", f"net_memif0,role=server,socket={sock}", "--",
        "--mode", "reflect"], "reflecting", server_log(tmp_path, "reflect"))
    try:
        kill_clients_under_load(p, sock, tmp_path)
        served_in_full(sock, tmp_path)
    finally:
        stop(p)
    assert p.returncode == 0, open(server_log(tmp_path, "reflect")).read()


def test_busy_polling_sluiced_outlives_clients_killed_under_load(tmp_path):
    sock = f"/run/sluice-churn-s{os.getpid()}.sock"
    port = free_tcp_port()
    p = start(["taskset", "-c", "0", SLUICED] + eal("churns") + [
        "--lcores", "0@0,1@0", "--vdev", f"net_memif0,role=server,socket={sock}", "--",
        "--ip", "198.18.0.1/24", "--tcp", f"127.0.0.1:{port}", "--workers", "1",
        "--memory", "64", "--busy-poll"], "sluiced: ready", server_log(tmp_path, "sluiced"))
    try:
        kill_clients_under_load(p, sock, tmp_path)
        got = served_in_full(sock, tmp_path, "--preload")
        st = stats(port)
        # --busy-poll: the worker went through idle spells between the
        # clients and never slept
        assert st["core0:idle_sleeps"] == "0", st
        assert int(st["curr_items"]) == 1000 and int(st["get_hits"]) > 0, st
        assert got["done"] > 0
    finally:
        stop(p)
    assert p.returncode == 0, open(server_log(tmp_path, "sluiced")).read()
