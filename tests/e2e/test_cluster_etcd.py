"""Two sluice-control processes over a real etcd (on loopback): one leads,
the other stands by; killing the leader, or stopping it, lets the standby
take over within two lease TTLs with the state etcd holds (same node ids,
same placement), and the data path never stops serving; a deposed leader
that comes back steps down and pushes nothing."""
import json
import os
import signal
import subprocess
import threading
import time

import pytest
from pymemcache.client.base import Client

from sluice_harness import BUILD, ROOT, sh
from cluster import alive, cluster_stats  # scripts/cluster.py, on the path by sluice_harness

CLUSTER = os.path.join(ROOT, "scripts", "cluster.sh")
TTL = 2  # cluster.sh's --lease-ttl for the controllers

pytestmark = pytest.mark.skipif(subprocess.run(["which", "etcd"], capture_output=True).returncode,
                                reason="etcd-server is not installed")


@pytest.fixture
def cluster(tmp_path):
    d = str(tmp_path / "cl")
    r = subprocess.run([CLUSTER, "up", "--dir", d, "--etcd", "--controllers", "2"],
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    with open(os.path.join(d, "cluster.json")) as f:
        st = json.load(f)
    try:
        yield d, st
    finally:
        subprocess.run([CLUSTER, "down", "--dir", d], capture_output=True, timeout=120)
    assert st["client_netns"] not in sh("ip", "netns", "list").stdout
    assert not any(os.path.exists(f"/proc/{p}") and
                   open(f"/proc/{p}/stat").read().split(")")[-1].split()[0] != "Z"
                   for p in [st["etcd"]["pid"]] + [c["pid"] for c in st["controllers"]])


def leader(d, st):
    """Index of the controller that leads, from their logs."""
    for _ in range(100):
        for i in range(len(st["controllers"])):
            if not alive(st["controllers"][i]["pid"]):
                continue  # killed (a zombie not yet reaped counts as gone)
            log = open(os.path.join(d, f"control{i}.log")).read()
            if "elected" in log and "stepping down" not in log.split("elected")[-1]:
                return i
        time.sleep(0.05)
    raise AssertionError("no controller leads")


def converged(st, above):
    s = [cluster_stats(n["local_tcp"]) for n in st["nodes"]]
    ok = (all(x["epoch"] > above and x["connected"] for x in s) and
          len({x["epoch"] for x in s}) == 1 and sum(x["slots_owned"] for x in s) == 16384)
    return s if ok else None


def wait_converged(st, above, timeout=15):
    t0 = time.time()
    while time.time() - t0 < timeout:
        s = converged(st, above)
        if s:
            return time.time() - t0, s
        time.sleep(0.01)
    raise AssertionError("the nodes did not converge on a new epoch")


class Reader(threading.Thread):
    """Reads a key through a node the whole time: every read must answer."""

    def __init__(self, addr, key):
        super().__init__(daemon=True)
        self.c = Client(addr, timeout=5, connect_timeout=5)
        self.key, self.stop, self.reads, self.bad = key, False, 0, []

    def run(self):
        while not self.stop:
            try:
                v = self.c.get(self.key)
                if v != b"steady":
                    self.bad.append(v)
            except Exception as e:  # noqa: BLE001 -- any failure counts
                self.bad.append(repr(e))
            self.reads += 1
            time.sleep(0.002)


def test_standby_takes_over_a_killed_leader_within_two_ttls(cluster):
    d, st = cluster
    a = leader(d, st)
    e0 = cluster_stats(st["nodes"][0]["local_tcp"])["epoch"]
    ids = {n["name"]: cluster_stats(n["local_tcp"])["node_id"] for n in st["nodes"]}
    slots = {n["name"]: cluster_stats(n["local_tcp"])["slots_owned"] for n in st["nodes"]}
    Client(st["nodes"][0]["local_tcp"]).set("steady", "steady", noreply=False)
    rd = Reader(st["nodes"][1]["local_tcp"], "steady")
    rd.start()
    t0 = time.time()
    os.kill(st["controllers"][a]["pid"], signal.SIGKILL)
    took, s = wait_converged(st, e0)
    rd.stop = True
    rd.join()
    print(f"takeover after kill -9: {took:.2f}s (lease TTL {TTL}s)")
    assert took <= 2 * TTL, took
    assert leader(d, st) == 1 - a
    # the state etcd held: the same ids, hence the same placement
    for n, x in zip(st["nodes"], s):
        assert x["node_id"] == ids[n["name"]] and x["slots_owned"] == slots[n["name"]]
    assert rd.reads > 50 and rd.bad == [], rd.bad[:5]
    # a restarted controller stands by, and the cluster still answers sluicectl
    ctl = ",".join(c["addr"] for c in st["controllers"])
    out = subprocess.run([os.path.join(BUILD, "sluicectl"), "--controller", ctl, "--key-file",
                          st["key_file"], "status", "--json"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    j = json.loads(out.stdout)
    assert j["epoch"] == s[0]["epoch"] and sum(n["alive"] for n in j["nodes"]) == 3


def test_a_stopped_leader_is_deposed_and_steps_down_when_it_returns(cluster):
    d, st = cluster
    a = leader(d, st)
    pid = st["controllers"][a]["pid"]
    e0 = cluster_stats(st["nodes"][0]["local_tcp"])["epoch"]
    os.kill(pid, signal.SIGSTOP)
    try:
        took, s = wait_converged(st, e0)
        print(f"takeover from a stopped leader: {took:.2f}s")
        assert took <= 2 * TTL + 1, took  # + the nodes' silence detection
        e1 = s[0]["epoch"]
        refused = [x["tables_refused"] for x in s]
    finally:
        os.kill(pid, signal.SIGCONT)
    log = os.path.join(d, f"control{a}.log")
    t0 = time.time()
    while "stepping down" not in open(log).read():
        assert time.time() - t0 < 5, open(log).read()
        time.sleep(0.05)
    time.sleep(0.5)
    s2 = [cluster_stats(n["local_tcp"]) for n in st["nodes"]]
    # the nodes stay with the new leader's table; the deposed one pushed
    # nothing they had to refuse
    assert all(x["epoch"] == e1 and x["connected"] for x in s2), s2
    assert [x["tables_refused"] for x in s2] == refused
    assert leader(d, st) == 1 - a
