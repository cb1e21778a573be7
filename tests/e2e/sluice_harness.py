"""Start sluiced on net_tap inside network namespaces the test creates.

Layout (one node):

    root netns                         client netns slcN
    +-----------------------------+    +------------------------------+
    | sluiced (DPDK, --no-pci)    |    | tap "sldN" (the node's wire) |
    |   port 0: net_tap sldN  ----+--->|   198.18.N.2/24              |
    |   port 1: net_tap slxN  --+ |    |   UDP/TCP clients run here   |
    |   TCP 127.0.0.1:PORT      | |    +------------------------------+
    +---------------------------+-+
                                |      exception netns slxN
                                +----> tap "slxN": 198.18.N.1/24, the
                                       node's MAC; kernel TCP listener

Traffic stays inside these namespaces and 198.18.0.0/15. Everything is torn
down in stop(), which tests call from fixtures (also on failure).
"""
import os
import signal
import socket
import struct
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from cluster import InNetns  # noqa: E402  (the one netns helper, shared with cluster.sh)
BUILD = os.environ.get("SLUICE_BUILD", os.path.join(ROOT, "build"))
SLUICED = os.path.join(BUILD, "sluiced")


def sh(*args, check=True):
    return subprocess.run(list(args), check=check, capture_output=True, text=True)


class Node:
    """One sluiced with its namespaces. idx picks 198.18.idx.0/24."""

    def __init__(self, idx=1, workers=2, memory=64, tcp_port=None, extra=(), lcores=None,
                 max_item=None, port="tap", exception=True, env=None):
        self.idx = idx
        self.tag = f"{os.getpid() % 10000}{idx}"
        self.cns = f"slc{self.tag}"
        self.xns = f"slx{self.tag}"
        self.dp_if = f"sld{self.tag}"
        self.ex_if = f"slx{self.tag}"
        self.ip = f"198.18.{idx}.1"
        self.client_ip = f"198.18.{idx}.2"
        self.workers = workers
        self.memory = memory
        self.tcp_port = tcp_port or free_tcp_port()
        self.extra = list(extra)
        self.lcores = lcores or ",".join(["0@0"] + [f"{i + 1}@{(i + 1) % 2}" for i in range(workers)])
        self.max_item = max_item
        self.port = port  # tap | memif (through dpdk-testpmd) | af_packet (veth)
        self.exception = exception  # an exception path (kernel TCP on the dataplane address)
        self.env = env  # extra environment for sluiced (e.g. SLUICE_FAULTS)
        self.peer_if = f"slv{self.tag}"
        self.sock = f"/run/sluice-memif-{self.tag}.sock"
        self.fwd = None
        self.proc = None
        self.log = os.path.join(os.environ.get("SLUICE_LOGDIR", "/tmp"), f"sluiced-{self.tag}.log")

    def start(self, timeout=30):
        self.stop()  # leftovers of an earlier, killed run
        sh("ip", "netns", "add", self.cns)
        sh("ip", "netns", "add", self.xns)
        if self.port == "tap":
            dp = f"net_tap{self.tag}a,iface={self.dp_if}"
        elif self.port == "memif":
            dp = f"net_memif{self.tag},role=server,socket={self.sock}"
        elif self.port == "af_packet":
            sh("ip", "link", "add", self.peer_if, "type", "veth", "peer", "name", self.dp_if)
            # veth leaves checksums to "hardware" (CHECKSUM_PARTIAL); af_packet
            # would hand sluiced TCP segments whose checksum is not filled in,
            # and the exception-path kernel would drop them
            sh("ethtool", "-K", self.dp_if, "tx", "off")
            sh("ip", "link", "set", self.peer_if, "up")
            sh("ip", "link", "set", self.dp_if, "up")
            dp = f"net_af_packet{self.tag},iface={self.peer_if},qpairs={self.workers}"
        else:
            raise ValueError(self.port)
        cmd = [SLUICED, "--no-pci", "--no-huge", "-m", "256", "--file-prefix", f"sl{self.tag}",
               "--lcores", self.lcores, "--log-level", "*:error",
               "--vdev", dp]
        if self.exception:
            cmd += ["--vdev", f"net_tap{self.tag}b,iface={self.ex_if}"]
        cmd += ["--", "--ip", f"{self.ip}/24", "--tcp", f"127.0.0.1:{self.tcp_port}",
                "--memory", str(self.memory), "--workers", str(self.workers)] + self.extra
        if self.exception:
            cmd += ["--exception-port", "1", "--exception-netns", self.xns]
        if self.max_item:
            cmd += ["--max-item-size", str(self.max_item)]
        self.logf = open(self.log, "w")
        env = dict(os.environ, **self.env) if self.env else None
        self.proc = subprocess.Popen(cmd, stdout=self.logf, stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("sluiced exited: " + open(self.log).read())
            if "sluiced: ready" in open(self.log).read():
                break
            time.sleep(0.1)
        else:
            raise RuntimeError("sluiced did not start: " + open(self.log).read())
        if self.port == "memif":
            # Debian's dpdk-testpmd as the wire: memif (client) <-> tap, io forwarding
            self.fwdlog = open(self.log + ".testpmd", "w")
            self.fwd = subprocess.Popen(
                ["stdbuf", "-oL", "dpdk-testpmd", "--no-pci", "--no-huge", "-m", "256", "--file-prefix", f"slp{self.tag}",
                 "--lcores", "0@0,1@1", "--log-level", "*:error",
                 "--vdev", f"net_memif{self.tag}c,role=client,socket={self.sock}",
                 "--vdev", f"net_tap{self.tag}c,iface={self.dp_if}",
                 "--", "--forward-mode=io", "--auto-start", "--no-mlockall",
                 "--total-num-mbufs=16384", f"--rxq={self.workers}", f"--txq={self.workers}"],
                stdin=subprocess.PIPE, stdout=self.fwdlog, stderr=subprocess.STDOUT)
            # move the tap only once testpmd has finished setting it up
            while time.time() < deadline:
                if "Press enter to exit" in open(self.log + ".testpmd").read():
                    break
                time.sleep(0.1)
            else:
                raise RuntimeError("testpmd did not start: " + open(self.log + ".testpmd").read())
        sh("ip", "link", "set", self.dp_if, "netns", self.cns)
        sh("ip", "-n", self.cns, "link", "set", self.dp_if, "address", f"02:00:00:00:{self.idx:02x}:02")
        sh("ip", "-n", self.cns, "addr", "add", f"{self.client_ip}/24", "dev", self.dp_if)
        sh("ip", "-n", self.cns, "link", "set", self.dp_if, "up")
        sh("ip", "-n", self.cns, "link", "set", "lo", "up")
        # wait until the fast path answers
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                if self.udp(b"version\r\n", timeout=0.5).startswith(b"VERSION"):
                    return self
            except (socket.timeout, OSError) as e:
                if os.environ.get("SLUICE_DEBUG"):
                    print("ready check:", repr(e), time.time())
        raise RuntimeError("sluiced does not answer over UDP: " + open(self.log).read())

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        rc = self.proc.returncode if self.proc else None
        self.proc = None
        if self.fwd:
            self.fwd.stdin.close()  # testpmd exits when its stdin ends
            try:
                self.fwd.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.fwd.kill()
                self.fwd.wait()
            self.fwd = None
        for ns in (self.cns, self.xns):
            sh("ip", "netns", "del", ns, check=False)
        for ifn in (self.dp_if, self.ex_if, self.peer_if):
            sh("ip", "link", "del", ifn, check=False)
        return rc

    # ---- clients -------------------------------------------------------

    def udp_socket(self):
        with InNetns(self.cns):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        return s

    def tcp_dataplane(self, timeout=5):
        """TCP to the node's own address (through the exception path)."""
        with InNetns(self.cns):
            s = socket.create_connection((self.ip, 11211), timeout=timeout)
        return s

    def tcp_local(self, timeout=5):
        return socket.create_connection(("127.0.0.1", self.tcp_port), timeout=timeout)

    def udp(self, payload, req_id=1, timeout=2.0, sock=None, raw=False):
        """Send one request datagram; collect the reply message (all
        datagrams of the request id) and return its bytes in order."""
        own = sock is None
        s = sock or self.udp_socket()
        try:
            s.settimeout(timeout)
            s.sendto(struct.pack(">HHHH", req_id, 0, 1, 0) + payload, (self.ip, 11211))
            return recv_message(s, req_id) if not raw else s.recvfrom(65536)[0]
        finally:
            if own:
                s.close()

    def rss_kib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def stats(self):
        s = self.tcp_local()
        try:
            return parse_stats(tcp_exchange(s, b"stats\r\n", b"END\r\n"))
        finally:
            s.close()

    def netns_run(self, *args, timeout=120, **kw):
        return subprocess.run(["ip", "netns", "exec", self.cns] + list(args), capture_output=True,
                              text=True, timeout=timeout, **kw)


def faults_built():
    """Is the sluiced under test a -Dfaults=true build?"""
    r = subprocess.run([SLUICED, "--no-pci", "--no-huge", "-m", "64", "--file-prefix",
                        f"slh{os.getpid()}", "--lcores", "0@0", "--log-level", "*:error",
                        "--", "--help"], capture_output=True, text=True, timeout=60)
    return "--test-table-swap-ms" in r.stdout + r.stderr


def free_tcp_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def recv_message(s, req_id):
    parts = {}
    total = None
    while total is None or len(parts) < total:
        d, _ = s.recvfrom(65536)
        rid, seq, cnt, _res = struct.unpack(">HHHH", d[:8])
        if rid != req_id:
            continue
        if total is None:
            total = cnt
        assert cnt == total, "datagram count changed within one message"
        assert seq < cnt, "sequence number out of range"
        assert seq not in parts, "duplicate datagram"
        parts[seq] = d[8:]
    return b"".join(parts[i] for i in range(total))


def tcp_exchange(s, data, until, timeout=5):
    s.settimeout(timeout)
    if data:
        s.sendall(data)
    buf = b""
    while not buf.endswith(until):
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
    return buf


def parse_stats(text):
    out = {}
    for line in text.decode().splitlines():
        p = line.split(" ", 2)
        if len(p) == 3 and p[0] == "STAT":
            out[p[1]] = p[2]
    return out


def start_memcached():
    """Stock memcached (Debian package) on loopback, TCP and UDP on one free
    port: the reference. Returns (process, port)."""
    port = free_tcp_port()
    p = subprocess.Popen(["memcached", "-u", "nobody", "-l", "127.0.0.1", "-p", str(port), "-U",
                          str(port), "-m", "64", "-t", "1"])
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return p, port
        except OSError:
            time.sleep(0.05)
    p.kill()
    raise RuntimeError("stock memcached did not start")
