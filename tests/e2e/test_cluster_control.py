"""sluice-control and the nodes' control channel: registration, slot tables
pushed with epochs, a node joining and dying, the controller away and
back, and messages without the cluster key refused.

The nodes here sit in namespaces of their own, out of each other's reach
(so no backup could ever copy its slots: the controller hands slots to
their place by placement at once, --handover immediate),
so a request a node forwards to another node is answered SERVER_ERROR (at
once: a short --forward-timeout-ms); the tests use that to see which node
serves a key. Forwarding itself is tested in test_cluster.py."""
import os
import signal
import socket
import struct
import subprocess
import time

import pytest

from sluice_harness import BUILD, Node, tcp_exchange

CONTROL = os.path.join(BUILD, "sluice-control")
KEY = "5a" * 32


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Controller:
    def __init__(self, tmp, port=None):
        self.port = port or free_port()
        self.key = os.path.join(tmp, "cluster.key")
        with open(self.key, "w") as f:
            f.write(KEY + "\n")
        os.chmod(self.key, 0o600)
        self.state = os.path.join(tmp, "control.state")
        self.log = os.path.join(tmp, "control.log")
        self.proc = None

    def start(self):
        self.logf = open(self.log, "a")
        self.proc = subprocess.Popen([CONTROL, "--listen", f"127.0.0.1:{self.port}", "--key-file",
                                      self.key, "--state", self.state, "--heartbeat-ms", "50",
                                      "--dead-after", "6", "--handover", "immediate"],
                                     stdout=self.logf, stderr=subprocess.STDOUT)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("sluice-control did not start: " + open(self.log).read())

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=10)
        self.proc = None

    def node_args(self, name):
        return ["--controller", f"127.0.0.1:{self.port}", "--cluster-key-file", self.key,
                "--name", name, "--heartbeat-ms", "50", "--forward-timeout-ms", "2"]


def cstats(n):
    s = n.tcp_local()
    try:
        out = tcp_exchange(s, b"stats cluster\r\n", b"END\r\n").decode()
    finally:
        s.close()
    return {l.split()[1]: int(l.split()[2]) for l in out.splitlines() if l.startswith("STAT ")}


def wait_for(pred, timeout=10.0, step=0.005):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if pred():
            return time.time() - t0
        time.sleep(step)
    raise AssertionError("timed out")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("cluster"))
    ctl = Controller(tmp).start()
    nodes = []
    try:
        for i in range(3):
            n = Node(idx=21 + i, workers=1, memory=32, lcores="0@0,1@1",
                     extra=ctl.node_args(f"n{i + 1}"))
            n.start()
            nodes.append(n)
        wait_for(lambda: all(cstats(n)["connected"] for n in nodes))
        wait_for(lambda: len({cstats(n)["epoch"] for n in nodes}) == 1 and
                 sum(cstats(n)["slots_owned"] for n in nodes) == 16384)
        yield ctl, nodes, tmp
    finally:
        for n in nodes:
            n.stop()
        ctl.stop()


def owners(nodes, keys):
    """Which node stores each key (UDP set; the others refuse it)."""
    out = {}
    socks = [n.udp_socket() for n in nodes]
    for k in keys:
        got = []
        for i, n in enumerate(nodes):
            r = n.udp(f"set {k} 0 0 1\r\nx\r\n".encode(), sock=socks[i])
            if r == b"STORED\r\n":
                got.append(i)
            else:
                assert r.startswith(b"SERVER_ERROR forward to node ") and \
                    r.endswith(b" timed out\r\n"), r
        out[k] = got
    for s in socks:
        s.close()
    return out


def test_three_nodes_share_the_slots_one_owner_per_key(cluster):
    ctl, nodes, _ = cluster
    st = [cstats(n) for n in nodes]
    assert sorted(s["node_id"] for s in st) == [1, 2, 3]
    for s in st:
        assert 4000 <= s["slots_owned"] <= 7000, s
    own = owners(nodes, [f"k{i}" for i in range(300)])
    assert all(len(v) == 1 for v in own.values())
    counts = [sum(1 for v in own.values() if v == [i]) for i in range(3)]
    assert min(counts) > 50, counts


def test_a_fourth_node_joins_and_every_node_has_the_table_quickly(cluster):
    ctl, nodes, _ = cluster
    e0 = cstats(nodes[0])["epoch"]
    before = [cstats(n)["slots_owned"] for n in nodes]
    n4 = Node(idx=24, workers=1, memory=32, lcores="0@0,1@1", extra=ctl.node_args("n4"))
    n4.start()
    try:
        wait_for(lambda: cstats(n4)["connected"] and cstats(n4)["epoch"] > e0)
        e1 = cstats(n4)["epoch"]
        t = wait_for(lambda: all(cstats(n)["epoch"] == e1 for n in nodes), step=0.001)
        print(f"4th node: the others had epoch {e1} {t * 1000:.1f} ms after it did")
        assert t < 1.0
        after = [cstats(n)["slots_owned"] for n in nodes + [n4]]
        assert sum(after) == 16384
        moved = sum(before) - sum(after[:3])
        assert moved == after[3]
        assert 0.18 * 16384 <= moved <= 0.32 * 16384, moved
        # only slots going to the new node moved: nobody else gained any
        for b, a in zip(before, after[:3]):
            assert a <= b
    finally:
        n4.stop()
    # it is declared dead after missed heartbeats, its slots go back
    wait_for(lambda: sum(cstats(n)["slots_owned"] for n in nodes) == 16384, timeout=10)


def test_nodes_serve_on_while_the_controller_is_away_and_it_comes_back(cluster):
    ctl, nodes, _ = cluster
    own = owners(nodes, ["away1", "away2", "away3", "away4"])
    e0 = cstats(nodes[0])["epoch"]
    ctl.stop(signal.SIGKILL)
    wait_for(lambda: not any(cstats(n)["connected"] for n in nodes))
    for k, (i,) in own.items():
        assert nodes[i].udp(f"get {k}\r\n".encode()) == f"VALUE {k} 0 1\r\nx\r\nEND\r\n".encode()
    assert all(cstats(n)["epoch"] == e0 for n in nodes)
    ctl.start()  # from its state file: epochs go on from where they were
    wait_for(lambda: all(cstats(n)["connected"] for n in nodes))
    wait_for(lambda: len({cstats(n)["epoch"] for n in nodes}) == 1 and cstats(nodes[0])["epoch"] > e0)
    assert sum(cstats(n)["slots_owned"] for n in nodes) == 16384
    assert sorted(cstats(n)["node_id"] for n in nodes) == [1, 2, 3], "ids kept"
    # the same owners as before: same members, same placement (once the
    # first heartbeat of the new epoch has renewed the nodes' write leases)
    def same():
        try:
            return owners(nodes, list(own)) == own
        except AssertionError:
            return False
    wait_for(same, timeout=2)


def frame(key_hex, typ, sender, epoch, seq, body=b""):
    import hashlib
    hdr = b"SLC1" + bytes([1, typ]) + b"\0\0" + struct.pack(">IIQQ", len(body), sender, epoch, seq)
    mac = hashlib.blake2b(hdr + body, digest_size=16, key=bytes.fromhex(key_hex)).digest()
    return hdr + body + mac


def test_frames_without_the_key_are_refused(cluster, tmp_path):
    ctl, nodes, _ = cluster
    # at the controller: a registration signed with another key closes the connection
    s = socket.create_connection(("127.0.0.1", ctl.port), timeout=5)
    body = (socket.inet_aton("198.18.99.1") + struct.pack(">HH6sBBB", 11211, 21211, b"\2" * 6, 1, 1, 5)
            + b"rogue")
    s.sendall(frame("00" * 32, 1, 0, 1, 10 ** 15, body))
    assert s.recv(100) == b""
    s.close()
    # the right key, but a replay of the same sequence on a new connection
    # after a valid one: refused as well
    good = frame(KEY, 1, 0, 1, 10 ** 18, body)
    for expect_ack in (True, False):
        s = socket.create_connection(("127.0.0.1", ctl.port), timeout=5)
        s.sendall(good)
        d = s.recv(100)
        assert (len(d) > 0) == expect_ack
        s.close()
    # at a node: a rogue controller without the key installs nothing
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(4)
    port = lst.getsockname()[1]
    n = Node(idx=25, workers=1, memory=32, lcores="0@0,1@1",
             extra=["--controller", f"127.0.0.1:{port}", "--cluster-key-file", ctl.key, "--name", "victim"])
    n.start()
    try:
        c, _ = lst.accept()
        c.settimeout(5)
        c.recv(4096)  # its registration
        table_like = b"\x00\x01" + b"\0" * 12 + b"\0\1\xff\xff" * 16384
        c.sendall(frame("11" * 32, 4, 0xffffffff, 99, 10 ** 17, b"\x00\x07") +
                  frame("11" * 32, 3, 0xffffffff, 99, 10 ** 17 + 1, table_like))
        wait_for(lambda: cstats(n)["messages_refused"] >= 1)
        st = cstats(n)
        assert st["tables_installed"] == 0 and st["epoch"] == 1 and st["node_id"] == 0
        c.close()
    finally:
        n.stop()
        lst.close()


SLUICECTL = os.path.join(BUILD, "sluicectl")


def ctl_cmd(ctl, *args, key=None):
    import json
    r = subprocess.run([SLUICECTL, "--controller", f"127.0.0.1:{ctl.port}", "--key-file",
                        key or ctl.key, *args], capture_output=True, text=True, timeout=30)
    return r


def test_sluicectl_status_and_where(cluster, tmp_path):
    import json
    ctl, nodes, _ = cluster
    r = ctl_cmd(ctl, "status", "--json")
    assert r.returncode == 0, r.stderr
    st = json.loads(r.stdout)
    assert st["epoch"] == cstats(nodes[0])["epoch"]
    alive = [n for n in st["nodes"] if n["alive"]]
    assert sorted(n["name"] for n in alive) == ["n1", "n2", "n3"]
    assert sum(n["primary_slots"] for n in alive) == 16384
    assert sum(n["backup_slots"] for n in alive) == 16384
    by_name = {n["name"]: n for n in st["nodes"]}
    for i, n in enumerate(nodes):
        assert by_name[f"n{i + 1}"]["primary_slots"] == cstats(n)["slots_owned"]
        assert by_name[f"n{i + 1}"]["addr"] == f"{n.ip}:11211"
    table = ctl_cmd(ctl, "status").stdout
    assert "n1" in table and "primary" in table
    own = owners(nodes, [f"w{i}" for i in range(20)])
    for k, (i,) in own.items():
        w = json.loads(ctl_cmd(ctl, "where", k, "--json").stdout)
        assert w["key"] == k and w["epoch"] == st["epoch"]
        assert w["primary"] == f"n{i + 1}"
        assert w["backup"] in ("n1", "n2", "n3") and w["backup"] != w["primary"]
        assert 0 <= w["slot"] < 16384
    bad = tmp_path / "bad.key"
    bad.write_text("ab" * 32)
    os.chmod(bad, 0o600)
    r = ctl_cmd(ctl, "status", key=str(bad))
    assert r.returncode != 0 and "key" in r.stderr
