"""A 3-node cluster made by scripts/cluster.sh: any node answers for every
key, over TCP and UDP, by forwarding to the key's node over the cluster
port; multi-gets keep their order; a node that cannot be reached gets its
requests answered with SERVER_ERROR in time; a fourth node takes its share
of the slots and no request ever returns another key's data; cluster-port
datagrams without the cluster key, or replayed, are refused."""
import hashlib
import json
import os
import socket
import struct
import subprocess
import time

import pytest
from pymemcache.client.base import Client

from sluice_harness import BUILD, InNetns, ROOT, sh

CLUSTER = os.path.join(ROOT, "scripts", "cluster.sh")


def run_cluster(*args):
    r = subprocess.run([CLUSTER, *args], capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def stats(addr, which=b"cluster"):
    host, port = addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(b"stats " + which + b"\r\n")
        buf = b""
        while not buf.endswith(b"END\r\n"):
            buf += s.recv(65536)
    return {l.split()[1]: int(l.split()[2]) for l in buf.decode().splitlines()
            if l.startswith("STAT ") and l.split()[2].isdigit()}


class Udp:
    """memcached over UDP from the client namespace."""

    def __init__(self, ns, ip):
        with InNetns(ns):
            self.s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.s.settimeout(2.0)
        self.to = (ip, 11211)
        self.rid = 0

    def ask(self, req, tries=3):
        for _ in range(tries):
            self.rid = (self.rid + 1) & 0xffff
            self.s.sendto(struct.pack(">HHHH", self.rid, 0, 1, 0) + req, self.to)
            parts, n = {}, None
            try:
                while n is None or len(parts) < n:
                    d = self.s.recv(65536)
                    rid, seq, cnt, _ = struct.unpack(">HHHH", d[:8])
                    if rid != self.rid:
                        continue
                    parts[seq], n = d[8:], cnt
                return b"".join(parts[i] for i in range(n))
            except socket.timeout:
                continue
        raise AssertionError(f"no UDP reply to {req[:40]!r}")

    def close(self):
        self.s.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("cl"))
    run_cluster("up", "--dir", d, "--nodes", "3")
    with open(os.path.join(d, "cluster.json")) as f:
        st = json.load(f)
    try:
        yield d, st
    finally:
        run_cluster("down", "--dir", d)
    # down leaves nothing behind
    assert st["client_netns"] not in sh("ip", "netns", "list").stdout
    assert not os.path.exists(os.path.join(d, "cluster.json"))


def clients(st):
    return [Client(n["local_tcp"], connect_timeout=5, timeout=5) for n in st["nodes"]]


def test_cluster_json_is_as_documented(cluster):
    d, st = cluster
    assert set(st) >= {"client_netns", "bridge_netns", "controllers", "etcd", "nodes"}
    assert st["etcd"] is None and len(st["controllers"]) == 1
    assert [n["name"] for n in st["nodes"]] == ["n1", "n2", "n3"]
    for i, n in enumerate(st["nodes"]):
        assert n["ip"].startswith("198.18.") and n["port"] == 11211
        assert n["local_tcp"] == f"127.0.0.1:{11211 + i}"
        assert set(n) >= {"name", "pid", "ip", "port", "local_tcp", "tap"}
    # exec runs in the client namespace, where every node answers
    out = run_cluster("exec", "--dir", d, "ip", "-o", "addr", "show", "slbr")
    assert "198.18.0.1/24" in out


def test_keys_set_through_one_node_read_back_through_every_other(cluster):
    d, st = cluster
    c1, c2, c3 = clients(st)
    N = 100_000
    keys = [f"key:{i}" for i in range(N)]
    for i in range(0, N, 1000):
        assert c1.set_many({k: f"value-{k}" for k in keys[i:i + 1000]}, noreply=False) == []
    for c in (c2, c3):
        for i in range(0, N, 1000):
            got = c.get_many(keys[i:i + 1000])
            assert got == {k: f"value-{k}".encode() for k in keys[i:i + 1000]}
    # each key is stored twice: on its own node and on its slot's backup
    # (once replication has caught up)
    deadline = time.time() + 10
    while True:
        items = [stats(n["local_tcp"], b"")["curr_items"] for n in st["nodes"]]
        if sum(items) == 2 * N or time.time() > deadline:
            break
        time.sleep(0.05)
    assert sum(items) == 2 * N, items
    assert min(items) > 2 * N / 6, items
    # and UDP from the client namespace, through every node
    for n in st["nodes"]:
        u = Udp(st["client_netns"], n["ip"])
        for i in range(0, 3000, 100):
            req = ("get " + " ".join(keys[i:i + 100]) + "\r\n").encode()
            want = b"".join(f"VALUE {k} 0 {len('value-' + k)}\r\nvalue-{k}\r\n".encode()
                            for k in keys[i:i + 100]) + b"END\r\n"
            assert u.ask(req) == want
        u.close()
    fwd = [stats(n["local_tcp"]) for n in st["nodes"]]
    assert all(f["forwarded_out"] > 0 and f["forwarded_in"] > 0 for f in fwd), fwd
    assert sum(f["forward_timeouts"] for f in fwd) == 0


def test_every_command_answers_through_any_node_as_on_the_owner(cluster):
    d, st = cluster
    c1, c2, c3 = clients(st)
    big = os.urandom(700_000)  # many datagrams each way between the nodes
    for i in range(10):
        assert c1.set(f"big{i}", big, noreply=False)
    for i in range(10):
        assert c2.get(f"big{i}") == big and c3.get(f"big{i}") == big
    c1.set("ctr", "10", noreply=False)
    assert c2.incr("ctr", 5) == 15 and c3.decr("ctr", 3) == 12
    assert c3.add("ctr", "x", noreply=False) is False
    assert c2.delete("ctr", noreply=False) is True
    assert c1.get("ctr") is None
    v, cas = c1.gets("big0")
    assert c2.cas("big0", b"new", cas, noreply=False) is True
    assert c3.get("big0") == b"new"
    c2.set("nr", "quiet", noreply=True)
    time.sleep(0.2)
    assert c3.get("nr") == b"quiet"
    # meta commands with quiet mode and opaque tokens, pipelined
    host, port = st["nodes"][2]["local_tcp"].split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(b"ms m1 2 T0\r\nhi\r\nmg m1 v O123 q\r\nmg nosuchkey v q\r\n"
                  b"md nosuchkey q\r\nmg m1 s v\r\nmn\r\n")
        buf = b""
        while not buf.endswith(b"MN\r\n"):
            buf += s.recv(65536)
    # as stock memcached answers it (md q still says NF)
    assert buf == b"HD\r\nVA 2 O123\r\nhi\r\nNF\r\nVA 2 s2\r\nhi\r\nMN\r\n"


def test_a_multi_get_over_three_nodes_keeps_its_order(cluster):
    d, st = cluster
    c1 = clients(st)[0]
    keys = [f"order{i}" for i in range(200)]
    c1.set_many({k: k.upper() for k in keys[::2]}, noreply=False)  # every other: a miss
    host, port = st["nodes"][1]["local_tcp"].split(":")
    for trial in range(5):
        ks = keys[trial:] + keys[:trial]
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.sendall(("get " + " ".join(ks) + "\r\n").encode())
            buf = b""
            while not buf.endswith(b"END\r\n"):
                buf += s.recv(65536)
        want = b"".join(f"VALUE {k} 0 {len(k)}\r\n{k.upper()}\r\n".encode()
                        for k in ks if int(k[5:]) % 2 == 0) + b"END\r\n"
        assert buf == want


def key_on(st, name, prefix="on"):
    """A key whose primary is node NAME, per sluicectl where."""
    ctl = st["controllers"][0]["addr"]
    for i in range(1000):
        k = f"{prefix}{i}"
        out = subprocess.run([os.path.join(BUILD, "sluicectl"), "--controller", ctl,
                              "--key-file", st["key_file"], "where", k, "--json"],
                             capture_output=True, text=True, check=True).stdout
        if json.loads(out)["primary"] == name:
            return k
    raise AssertionError("no key for " + name)


def test_an_unreachable_node_gets_a_timely_server_error_never_silence(cluster):
    d, st = cluster
    n3 = st["nodes"][2]
    k = key_on(st, "n3")
    c1 = clients(st)[0]
    assert c1.set(k, "here", noreply=False)
    # n3's NIC off the bridge: the controller (over loopback) still sees it
    # alive, but no datagram reaches it
    sh("ip", "-n", st["client_netns"], "link", "set", n3["tap"], "nomaster")
    try:
        host, port = st["nodes"][0]["local_tcp"].split(":")
        with socket.create_connection((host, int(port)), timeout=5) as s:
            t0 = time.time()
            s.sendall(f"get {k}\r\nset {k} 0 0 1\r\nx\r\nversion\r\n".encode())
            buf = b""
            while not buf.endswith(b"\r\nVERSION 1.6.18-sluice-0.1.0\r\n"):
                d_ = s.recv(65536)
                assert d_, buf
                buf += d_
            took = time.time() - t0
        lines = buf.decode().splitlines()
        assert lines[0] == lines[1] == "SERVER_ERROR forward to node 3 timed out", lines
        assert took < 2.0, took
        assert stats(st["nodes"][0]["local_tcp"])["forward_timeouts"] >= 2
    finally:
        sh("ip", "-n", st["client_netns"], "link", "set", n3["tap"], "master", "slbr")
    for _ in range(50):
        try:
            if c1.get(k) == b"here":
                break
        except Exception:
            pass
        time.sleep(0.1)
    assert c1.get(k) == b"here"


def cport_datagram(key, typ, node, worker, epoch, rid, chunk):
    hdr = (b"SLF1" + bytes([typ, 0]) + struct.pack(">HBBHIII", node, worker, 0, len(chunk),
                                                    len(chunk), 0, 0) +
           struct.pack(">QQ", epoch, rid))
    mac = hashlib.blake2b(hdr + chunk, digest_size=16, key=key).digest()
    return hdr + chunk + mac


def test_cluster_port_refuses_forged_and_replayed_datagrams(cluster):
    d, st = cluster
    key = bytes.fromhex(open(st["key_file"]).read().strip())
    n2 = st["nodes"][1]
    k = key_on(st, "n2", prefix="cp")
    with InNetns(st["client_netns"]):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("198.18.0.1", 0))
    s.settimeout(1.0)
    try:
        before = stats(n2["local_tcp"])["forward_refused"]
        rid = time.time_ns()
        good = cport_datagram(key, 1, 7, 0, 1, rid, f"set {k} 0 0 3\r\nabc\r\nmn\r\n".encode())
        s.sendto(good, (n2["ip"], 21211))
        rep = s.recv(4096)
        assert rep[:4] == b"SLF1" and rep[4] == 2
        assert rep[40:-16] == b"STORED\r\nMN\r\n"
        assert clients(st)[0].get(k) == b"abc"
        # the same datagram again: refused, unanswered, not applied twice
        s.sendto(good, (n2["ip"], 21211))
        forged = cport_datagram(b"\x01" * 32, 1, 7, 0, 1, rid + 1,
                                f"set {k} 0 0 3\r\nbad\r\nmn\r\n".encode())
        s.sendto(forged, (n2["ip"], 21211))
        s.sendto(b"SLF1 junk", (n2["ip"], 21211))
        with pytest.raises(socket.timeout):
            s.recv(4096)
        assert stats(n2["local_tcp"])["forward_refused"] == before + 3
        assert clients(st)[0].get(k) == b"abc"
    finally:
        s.close()


def test_a_fourth_node_joins_and_no_request_returns_another_keys_data(cluster):
    d, st = cluster
    c1 = clients(st)[0]
    keys = [f"join{i}" for i in range(3000)]
    c1.set_many({k: "v-" + k for k in keys}, noreply=False)
    e0 = stats(st["nodes"][0]["local_tcp"])["epoch"]
    t0 = time.time()
    run_cluster("add", "--dir", d)
    with open(os.path.join(d, "cluster.json")) as f:
        st2 = json.load(f)
    assert [n["name"] for n in st2["nodes"]] == ["n1", "n2", "n3", "n4"]
    owned = [stats(n["local_tcp"]) for n in st2["nodes"]]
    assert len({o["epoch"] for o in owned}) == 1 and owned[0]["epoch"] > e0
    share = owned[3]["slots_owned"] / 16384
    assert 0.15 <= share <= 0.35, share
    # through every node, including the new one: the key's own value or a
    # miss (its slot moved, and migration is not there to bring it)
    hits = 0
    for c in clients(st2):
        got = c.get_many(keys)
        for k, v in got.items():
            assert v == ("v-" + k).encode(), (k, v)
        hits += len(got)
    assert hits >= 4 * len(keys) * 0.6, hits
    # the new node is reached by the others, and reaches them
    c4 = clients(st2)[3]
    c4.set("from4", "x", noreply=False)
    assert all(c.get("from4") == b"x" for c in clients(st2))
    print(f"join converged in {time.time() - t0:.2f}s")


def in_client_ns(st, *argv):
    return subprocess.run(["ip", "netns", "exec", st["client_netns"], *argv],
                          capture_output=True, text=True, timeout=300)


def test_libsluice_routes_straight_to_the_owner_and_reads_back_everywhere(cluster):
    d, st = cluster
    ex = os.path.join(BUILD, "sluice-example")
    fwd0 = sum(stats(n["local_tcp"])["forwarded_in"] for n in st["nodes"])
    N = 100_000
    r = in_client_ns(st, ex, f"{st['nodes'][0]['ip']}:11211", "set", "lib", str(N))
    assert r.returncode == 0 and f"{N} set, 0 failed" in r.stdout, r.stdout + r.stderr
    # straight to each key's node: nothing was forwarded
    assert sum(stats(n["local_tcp"])["forwarded_in"] for n in st["nodes"]) == fwd0
    r = in_client_ns(st, ex, f"{st['nodes'][2]['ip']}:11211", "check", "lib", str(N))
    assert r.returncode == 0 and f"{N} read, {N} right" in r.stdout, r.stdout + r.stderr
    # the same keys through stock clients over TCP, through nodes 2 and 3
    keys = [f"lib:{i}" for i in range(N)]
    for c in clients(st)[1:]:
        for i in range(0, N, 1000):
            assert c.get_many(keys[i:i + 1000]) == {k: f"value-{k}".encode()
                                                    for k in keys[i:i + 1000]}
    # and keys a stock client set, read by libsluice
    c1 = clients(st)[0]
    for i in range(0, 5000, 1000):
        c1.set_many({f"pm:{j}": f"value-pm:{j}" for j in range(i, i + 1000)}, noreply=False)
    r = in_client_ns(st, ex, f"{st['nodes'][1]['ip']}:11211", "check", "pm", "5000")
    assert r.returncode == 0 and "5000 right" in r.stdout, r.stdout + r.stderr


def test_sluicectl_get_set_del(cluster):
    d, st = cluster
    ctl = os.path.join(BUILD, "sluicectl")
    nodes = ",".join(f"{n['ip']}:11211" for n in st["nodes"][1:])
    r = in_client_ns(st, ctl, "--nodes", nodes, "set", "ctl-key", "hello world")
    assert r.returncode == 0, r.stderr
    assert clients(st)[0].get("ctl-key") == b"hello world"
    r = in_client_ns(st, ctl, "--nodes", nodes, "get", "ctl-key")
    assert r.returncode == 0 and r.stdout == "hello world\n"
    r = in_client_ns(st, ctl, "--nodes", nodes, "del", "ctl-key")
    assert r.returncode == 0
    r = in_client_ns(st, ctl, "--nodes", nodes, "get", "ctl-key")
    assert r.returncode == 1 and "not found" in r.stderr
    r = in_client_ns(st, ctl, "--nodes", "198.18.0.250:11211", "get", "ctl-key")
    assert r.returncode == 1 and "no node" in r.stderr


def test_memcached_t_files_pass_through_any_node(cluster):
    """memcached's own t/ files that pass against one node pass against a
    node of the cluster, most of their keys living on the other nodes (a
    flush_all is each node's own: every node is flushed first, as a pool
    of memcached servers is)."""
    from test_memcached_suite import REQUIRED, run_file, suite_dir, tap
    d, st = cluster
    t = suite_dir()
    target = st["nodes"][1]
    for name in REQUIRED:
        # the last file's noreply writes may still be on their way to their
        # nodes; a forward is answered or given up within the forward
        # timeout (200 ms), so after that a flush is the last word
        time.sleep(0.25)
        with open(os.path.join(d, "cluster.json")) as f:
            every = json.load(f)["nodes"]  # a node may have joined since
        for n in every:
            Client(n["local_tcp"]).flush_all(noreply=False)
        rc, out = run_file(t, name, f"{target['ip']}:11211", netns=st["client_netns"])
        if name == "udp":
            plan, res = tap(out)
            text = [n for n, (ok, desc) in res.items() if "binary" not in desc]
            assert len(text) >= 50 and all(res[n][0] for n in text), out
            continue
        assert rc == 0, f"{name}:\n{out}"
    assert stats(target["local_tcp"])["forwarded_out"] > 0
