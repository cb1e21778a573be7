"""Replication and failover on a 3-node cluster (scripts/cluster.sh): every
write a primary acknowledged is on its backup once the stream's lag is 0;
kill -9 of a node loses none of them and its slots take writes again on
their backups within the failover target; the node restarted comes back as
the backup of its slots, copies them whole and serves them again; a node
stopped (SIGSTOP) past its lease acknowledges no write when it resumes; a
node cut off from the others (its tap off the bridge) refuses writes once
its backups lag by more than the bound, and catches them up when it
returns. Each test checks what a client saw: every acknowledged write is
read back with its value afterwards."""
import os
import signal
import sys
import time

import pytest
from pymemcache.client.base import Client

from sluice_harness import ROOT, sh

sys.path.insert(0, os.path.join(ROOT, "scripts"))
from cluster import Cluster, stat_lines, tcp_ask  # noqa: E402


def cstats(node):
    return {k: int(v) for k, v in stat_lines(node["local_tcp"], "cluster") if v.isdigit()}


def streams(node):
    """`stats replication`: name -> (state, {field: int})."""
    out = {}
    for name, rest in stat_lines(node["local_tcp"], "replication"):
        state, *kv = rest.split()
        out[name] = (state, {k: int(v) for k, v in (x.split("=") for x in kv)})
    return out


def wait_for(pred, timeout=20, step=0.02):
    t0 = time.time()
    while time.time() - t0 < timeout:
        try:
            if pred():
                return time.time() - t0
        except (OSError, ConnectionError):
            pass
        time.sleep(step)
    raise AssertionError("condition not met in time")


def caught_up(nodes):
    """Every stream out of every node streaming, nothing unacknowledged."""
    for n in nodes:
        for name, (state, f) in streams(n).items():
            if name.startswith("out.") and (state != "streaming" or f["lag_records"]):
                return False
    return True


def client(node, timeout=2):
    return Client(node["local_tcp"], connect_timeout=timeout, timeout=timeout)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("repl"))
    c = Cluster(d)
    try:
        c.up(3, 1, 64, 1)
        yield c
    finally:
        c.down()
    assert c.state["client_netns"] not in sh("ip", "netns", "list").stdout


def owned_by(c, idx, keys):
    return c.owned_keys(idx, keys)


def test_kill_9_loses_no_acknowledged_write_and_the_node_returns_as_backup(cluster):
    c = cluster
    nodes = c.state["nodes"]
    keys = {f"r{i}": f"v{i}-{os.urandom(4).hex()}" for i in range(2000)}
    set_all(client(nodes[0]), keys)
    wait_for(lambda: caught_up(nodes))
    victim = nodes[2]
    mine = owned_by(c, 2, list(keys))
    assert len(mine) > 200, len(mine)
    os.kill(victim["pid"], signal.SIGKILL)
    t0 = time.time()
    c1 = client(nodes[0], timeout=1)
    # the first write of one of its keys that succeeds, on the new primary
    while True:
        try:
            if c1.set(mine[0], keys[mine[0]], noreply=False):
                break
        except Exception:
            pass
        assert time.time() - t0 < 5, "no failover"
    failover = time.time() - t0
    print(f"kill -9 to the first write on the new primary: {failover * 1000:.0f} ms")
    assert failover < 1.0
    got = {}
    for i in range(0, len(keys), 100):
        got.update(c1.get_many(list(keys)[i:i + 100]))
    lost = [k for k in keys if got.get(k) != keys[k].encode()]
    assert not lost, f"{len(lost)} acknowledged writes lost, e.g. {lost[:5]}"
    # restarted, it is first the backup of its slots, copies them, and
    # then serves them again, with every value
    c.restart("n3")
    nodes = c.state["nodes"]
    wait_for(lambda: cstats(nodes[2])["slots_owned"] > 0 and caught_up(nodes))
    ins = {k: v for k, v in streams(nodes[2]).items() if k.startswith("in.")}
    assert ins and all(st == "streaming" for st, _ in ins.values()), ins
    # the operator's view: every stream streaming, nothing lagging
    import subprocess
    from sluice_harness import BUILD
    st = subprocess.run([os.path.join(BUILD, "sluicectl"), "--controller",
                         c.state["controllers"][0]["addr"], "--key-file", c.state["key_file"],
                         "status"], capture_output=True, text=True, timeout=10)
    rows = [l.split() for l in st.stdout.splitlines() if " core " in l]
    assert st.returncode == 0 and len(rows) == 6, st.stdout
    assert all(r[6] == "streaming" for r in rows), st.stdout
    for n in nodes:
        got = {}
        cl = client(n)
        for i in range(0, len(keys), 100):
            got.update(cl.get_many(list(keys)[i:i + 100]))
        lost = [k for k in keys if got.get(k) != keys[k].encode()]
        assert not lost, f"through {n['name']}: {len(lost)} lost, e.g. {lost[:5]}"


def set_all(cl, kv, timeout=10):
    """set_many until every key is stored: a table change answers "try
    again" for a moment."""
    t0 = time.time()
    while True:
        try:
            if not cl.set_many(kv, noreply=False):
                return
        except Exception:
            pass
        assert time.time() - t0 < timeout, "writes not taken"
        time.sleep(0.02)


def test_a_stopped_primary_acknowledges_no_write_when_it_resumes(cluster):
    c = cluster
    c.wait_converged()
    nodes = c.state["nodes"]
    keys = [f"s{i}" for i in range(3000)]
    mine = owned_by(c, 1, keys)[:300]
    assert len(mine) > 100
    set_all(client(nodes[0]), {k: "old" for k in mine})
    wait_for(lambda: caught_up(nodes))
    victim = nodes[1]
    fenced0 = cstats(victim)["writes_fenced"]
    os.kill(victim["pid"], signal.SIGSTOP)
    try:
        # its slots fail over; the new primary takes writes
        c1 = client(nodes[0], timeout=1)
        t0 = time.time()
        while True:
            try:
                if c1.set(mine[0], "new", noreply=False):
                    break
            except Exception:
                pass
            assert time.time() - t0 < 5, "no failover"
        set_all(c1, {k: "new" for k in mine})
        time.sleep(max(0, 2.0 - (time.time() - t0)))
    finally:
        os.kill(victim["pid"], signal.SIGCONT)
    # straight to the resumed node, at once: whatever it acknowledges must
    # be what the cluster holds afterwards
    acked = {}
    cv = client(victim, timeout=1)
    for k in mine:
        try:
            if cv.set(k, "late", noreply=False):
                acked[k] = "late"
        except Exception:
            pass
    wait_for(lambda: cstats(victim)["epoch"] == cstats(nodes[0])["epoch"])
    got = {}
    for i in range(0, len(mine), 100):
        got.update(client(nodes[0]).get_many(mine[i:i + 100]))
    bad = [k for k in mine if got.get(k) != acked.get(k, "new").encode()]
    assert not bad, f"{len(bad)} keys not as acknowledged, e.g. {[(k, got.get(k)) for k in bad[:5]]}"
    print(f"resumed node: {len(acked)} writes acknowledged (forwarded to the new primary), "
          f"{cstats(victim)['writes_fenced'] - fenced0} refused as fenced")
    # it rejoins (as a new node's would) and the cluster serves all slots
    c.wait_converged()


def test_a_primary_cut_off_from_its_backups_stops_taking_writes_and_catches_up(cluster):
    c = cluster
    c.wait_converged()
    nodes = c.state["nodes"]
    keys = [f"p{i}" for i in range(3000)]
    mine = owned_by(c, 0, keys)
    assert len(mine) > 300
    wait_for(lambda: caught_up(nodes))
    ns, tap = c.state["client_netns"], nodes[0]["tap"]
    c0 = client(nodes[0], timeout=1)  # its local TCP: not through the bridge
    acked, refused = {}, 0
    sh("ip", "-n", ns, "link", "set", tap, "nomaster")
    try:
        t0 = time.time()
        for k in mine:
            try:
                if c0.set(k, "cut", noreply=False):
                    acked[k] = "cut"
            except Exception as e:
                assert "refused" in str(e), e
                refused += 1
            if time.time() - t0 > 1.5:
                break
            time.sleep(0.002)
    finally:
        sh("ip", "-n", ns, "link", "set", tap, "master", "slbr")
    assert acked, "it took writes before its backups lagged past the bound"
    assert refused, "it took writes although its backups lagged past the bound"
    print(f"cut off: {len(acked)} writes taken, then {refused} refused")
    wait_for(lambda: caught_up(nodes))
    # writes again, and what it took is on its backups: a kill -9 now
    # loses none of it
    assert c0.set(mine[-1], "after", noreply=False)
    wait_for(lambda: caught_up(nodes))
    os.kill(nodes[0]["pid"], signal.SIGKILL)
    c1 = client(nodes[1], timeout=1)
    wait_for(lambda: cstats(nodes[1])["slots_owned"] + cstats(nodes[2])["slots_owned"] == 16384,
             timeout=10)
    got = {}
    for i in range(0, len(mine), 100):
        got.update(c1.get_many(mine[i:i + 100]))
    lost = [k for k in acked if got.get(k) != b"cut"]
    assert not lost, f"{len(lost)} acknowledged writes lost, e.g. {lost[:5]}"
    assert got.get(mine[-1]) == b"after"
    c.restart("n1")


def meta(node, req):
    return tcp_ask(node["local_tcp"], req, end=b"\r\n", timeout=5)


def test_the_durability_flag_answers_only_once_the_backup_has_the_write(cluster):
    c = cluster
    c.wait_converged()
    nodes = c.state["nodes"]
    keys = owned_by(c, 1, [f"d{i}" for i in range(2000)])[:50]
    for k in keys:
        assert meta(nodes[1], f"ms {k} 4 B\r\ndura\r\n".encode()) == b"HD\r\n"
    st = {k: f for k, (_, f) in streams(nodes[1]).items() if k.startswith("out.")}
    assert sum(f["durable_acked"] for f in st.values()) >= len(keys), st
    # no waiting for lag to fall: kill -9 at once, and nothing is lost
    os.kill(nodes[1]["pid"], signal.SIGKILL)
    wait_for(lambda: cstats(nodes[0])["slots_owned"] + cstats(nodes[2])["slots_owned"] == 16384,
             timeout=10)
    got = client(nodes[0]).get_many(keys)
    assert got == {k: b"dura" for k in keys}, len(got)
    c.restart("n2")
    # a backup that cannot be reached: the write is not acknowledged
    nodes = c.state["nodes"]
    k = owned_by(c, 1, [f"e{i}" for i in range(2000)])[0]
    ns = c.state["client_netns"]
    for n in (nodes[0], nodes[2]):
        sh("ip", "-n", ns, "link", "set", n["tap"], "nomaster")
    try:
        r = meta(nodes[1], f"ms {k} 1 B\r\nx\r\n".encode())
    finally:
        for n in (nodes[0], nodes[2]):
            sh("ip", "-n", ns, "link", "set", n["tap"], "master", "slbr")
    assert r.startswith(b"SERVER_ERROR") and b"acknowledge" in r, r
    c.wait_converged()
