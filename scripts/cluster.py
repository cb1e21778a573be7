#!/usr/bin/env python3
"""A Sluice cluster on one machine (scripts/cluster.sh is its front door).

    client netns NS (also the bridge's)           root netns
    +------------------------------------+        +-----------------------------+
    | bridge slbr 198.18.0.1/24          |        | sluice-control 127.0.0.1:P  |
    |   clients run here                 |        | n1: sluiced, TCP 127.0.0.1: |
    |   tap NSt1 <-- n1's NIC (net_tap) -+--------+     11211, 198.18.0.11      |
    |   tap NSt2 <-- n2's NIC            |        | n2: ... 11212, 198.18.0.12  |
    |   ...                              |        | ...                         |
    +------------------------------------+        +-----------------------------+
    netns NSxN: node N's exception-path tap, carrying its address (TCP)

Every node answers UDP and TCP at IP:11211 from the client netns (TCP through
its exception path), TCP at 127.0.0.1:1121N from the root netns, and the
nodes reach each other's cluster port over the bridge. DIR/cluster.json says
what was made; `down` removes all of it.
"""
import argparse
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.environ.get("SLUICE_BUILD", os.path.join(ROOT, "build"))
SUBNET = "198.18.0"
CLIENT_IP = f"{SUBNET}.1"
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL("libc.so.6", use_errno=True)


def sh(*args, check=True):
    return subprocess.run(list(args), check=check, capture_output=True, text=True)


class InNetns:
    """The calling thread enters a netns; sockets made inside keep it."""

    def __init__(self, name):
        self.name = name

    def __enter__(self):
        self.orig = os.open("/proc/self/ns/net", os.O_RDONLY)
        fd = os.open("/var/run/netns/" + self.name, os.O_RDONLY)
        try:
            if _libc.setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns " + self.name)
        finally:
            os.close(fd)
        return self

    def __exit__(self, *exc):
        _libc.setns(self.orig, CLONE_NEWNET)
        os.close(self.orig)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def alive(pid):
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:  # a zombie child of ours is not alive
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def tcp_ask(addr, req, end=b"END\r\n", timeout=2.0):
    host, port = addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(req)
        buf = b""
        while not buf.endswith(end):
            d = s.recv(65536)
            if not d:
                break
            buf += d
    return buf


def cluster_stats(addr):
    out = tcp_ask(addr, b"stats cluster\r\n").decode()
    return {l.split()[1]: int(l.split()[2]) for l in out.splitlines() if l.startswith("STAT ")}


def stat_lines(addr, which):
    """`stats WHICH` of a node: [name, value] pairs."""
    out = tcp_ask(addr, b"stats " + which.encode() + b"\r\n", timeout=5).decode()
    return [l.split(" ", 2)[1:] for l in out.splitlines() if l.startswith("STAT ")]


_xxh = None


def key_slot(key):
    """The slot of @p key, by the slot contract: XXH3-64 (libxxhash, which
    sluiced links too) mod 16384."""
    global _xxh
    if _xxh is None:
        _xxh = ctypes.CDLL("libxxhash.so.0")
        _xxh.XXH3_64bits.restype = ctypes.c_uint64
        _xxh.XXH3_64bits.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
    b = key.encode()
    return _xxh.XXH3_64bits(b, len(b)) % 16384


def streams_settled(addr):
    """No replication stream of the node is copying slots (resyncing)."""
    out = tcp_ask(addr, b"stats replication\r\n").decode()
    return not any(l.split()[2] in ("resyncing", "dropping", "draining")
                   for l in out.splitlines() if l.startswith("STAT "))


def udp_version(ns, ip, timeout=0.3):
    with InNetns(ns):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.settimeout(timeout)
        s.sendto(b"\x00\x01\x00\x00\x00\x01\x00\x00version\r\n", (ip, 11211))
        return s.recv(2048)[8:].startswith(b"VERSION")
    except OSError:
        return False
    finally:
        s.close()


class Cluster:
    def __init__(self, d):
        self.dir = os.path.abspath(d)
        self.path = os.path.join(self.dir, "cluster.json")
        self.state = None

    # ---- state -------------------------------------------------------------
    def load(self):
        with open(self.path) as f:
            self.state = json.load(f)
        return self.state

    def save(self):
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.state, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, self.path)

    # ---- pieces ------------------------------------------------------------
    def start_etcd(self):
        import urllib.request
        port, peer = free_port(), free_port()
        url = f"http://127.0.0.1:{port}"
        log = open(os.path.join(self.dir, "etcd.log"), "a")
        p = subprocess.Popen(["etcd", "--name", "sluice", "--data-dir",
                              os.path.join(self.dir, "etcd"), "--listen-client-urls", url,
                              "--advertise-client-urls", url, "--listen-peer-urls",
                              f"http://127.0.0.1:{peer}", "--initial-advertise-peer-urls",
                              f"http://127.0.0.1:{peer}", "--initial-cluster",
                              f"sluice=http://127.0.0.1:{peer}"],
                             stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 30
        while True:
            try:
                urllib.request.urlopen(urllib.request.Request(
                    url + "/v3/kv/range", data=b'{"key":"AA=="}', method="POST"), timeout=1)
                return {"pid": p.pid, "url": url}
            except OSError:
                if p.poll() is not None or time.time() > deadline:
                    raise RuntimeError("etcd did not start: see " + log.name)
                time.sleep(0.1)

    def start_controller(self, i, port=None):
        """Controller i, on a fresh port (or @p port: a restart where the
        nodes look for it)."""
        st = self.state
        port = port or free_port()
        log = open(os.path.join(self.dir, f"control{i}.log"), "a")
        where = (["--etcd", st["etcd"]["url"], "--lease-ttl", str(st.get("lease_ttl", 2))]
                 if st.get("etcd") else ["--state", os.path.join(self.dir, "control.state")])
        cmd = [os.path.join(BUILD, "sluice-control"), "--listen", f"127.0.0.1:{port}", "--key-file",
               st["key_file"], "--heartbeat-ms", "50"] + where
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if p.poll() is not None:
                    raise RuntimeError("sluice-control exited: see " + log.name)
                time.sleep(0.05)
        return {"pid": p.pid, "addr": f"127.0.0.1:{port}"}

    def start_node(self, n, extra=()):
        st = self.state
        ns = st["client_netns"]
        name = f"n{n}"
        tap, xif, xns = f"{ns}t{n}", f"{ns}x{n}", f"{ns}x{n}"
        ip = f"{SUBNET}.{10 + n}"
        local = f"127.0.0.1:{11210 + n}"
        sh("ip", "netns", "add", xns, check=False)
        ctl = ",".join(c["addr"] for c in st["controllers"])
        tag = f"{ns}-{name}"
        # SLUICE_LOGDIR: where the test suite collects logs (sanitizer reports)
        log_path = os.path.join(os.environ.get("SLUICE_LOGDIR", self.dir), f"{ns}-{name}.log")
        log = open(log_path, "w")
        cmd = [os.path.join(BUILD, "sluiced"), "--no-pci", "--no-huge", "-m", "256",
               "--file-prefix", tag, "--lcores", f"0@{n % 2},1@{(n + 1) % 2}",
               "--log-level", "*:error",
               "--vdev", f"net_tap{n}0,iface={tap}", "--vdev", f"net_tap{n}1,iface={xif}", "--",
               "--ip", f"{ip}/24", "--tcp", local, "--workers", str(st["workers"]),
               "--memory", str(st["memory"]), "--exception-port", "1", "--exception-netns", xns,
               "--controller", ctl, "--cluster-key-file", st["key_file"], "--name", name,
               "--heartbeat-ms", "50"] + st.get("node_args", []) + list(extra)
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 60
        while "sluiced: ready" not in open(log_path).read():
            if p.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"{name} did not start:\n" + open(log_path).read())
            time.sleep(0.05)
        sh("ip", "link", "set", tap, "netns", ns)
        # the kernel end of a net_tap starts with the DPDK end's MAC: the
        # bridge would take frames to the node for its own
        sh("ip", "-n", ns, "link", "set", tap, "address", f"02:00:00:00:{n // 256:02x}:{n % 256:02x}")
        sh("ip", "-n", ns, "link", "set", tap, "master", "slbr")
        # a forwarded 1 MB value is ~750 datagrams at once, and replication
        # streams share the link: more room than the kernel's default 1000
        # frames queued towards the node
        sh("ip", "-n", ns, "link", "set", tap, "txqueuelen", "10000")
        sh("ip", "-n", ns, "link", "set", tap, "up")
        node = {"name": name, "pid": p.pid, "ip": ip, "port": 11211, "local_tcp": local,
                "tap": tap, "exception_netns": xns, "log": log_path}
        while not udp_version(ns, ip):
            if p.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"{name} does not answer over UDP:\n" + open(log_path).read())
        return node

    def wait_converged(self, timeout=30):
        """Every node registered, on one epoch, the slots split between them
        (a node that joined serves its slots once it holds their copies)."""
        deadline = time.time() + timeout
        since, last = None, None
        while time.time() < deadline:
            try:
                st = [cluster_stats(n["local_tcp"]) for n in self.state["nodes"]]
                if (all(s["connected"] for s in st) and len({s["epoch"] for s in st}) == 1 and
                        sum(s["slots_owned"] for s in st) == 16384 and
                        all(s["slots_owned"] for s in st) and
                        all(streams_settled(n["local_tcp"]) for n in self.state["nodes"])):
                    # and no handover still to come: the epoch stays put
                    # for a few heartbeats, every copy whole
                    if last != st[0]["epoch"]:
                        since, last = time.time(), st[0]["epoch"]
                    elif time.time() - since >= 0.3:
                        return last
                else:
                    last = None
            except OSError:
                pass
            time.sleep(0.02)
        raise RuntimeError("the cluster did not converge: see the logs in " + self.dir)

    # ---- commands ----------------------------------------------------------
    def up(self, nodes, workers, memory, controllers, node_args=(), etcd=False):
        if os.path.exists(self.path):
            old = self.load()
            if any(alive(x["pid"]) for x in old["nodes"] + old["controllers"]):
                raise SystemExit(f"cluster.sh: a cluster is up in {self.dir}: `down` it first")
            self.down()
        os.makedirs(self.dir, exist_ok=True)
        for f in ("control.state",):
            if os.path.exists(os.path.join(self.dir, f)):
                os.unlink(os.path.join(self.dir, f))
        subprocess.run(["rm", "-rf", os.path.join(self.dir, "etcd")], check=True)
        ns = f"slcl{zlib.crc32(self.dir.encode()) % 100000}"
        key = os.path.join(self.dir, "cluster.key")
        with open(key, "w") as f:
            f.write(os.urandom(32).hex() + "\n")
        os.chmod(key, 0o600)
        self.state = {"client_netns": ns, "bridge_netns": ns, "controllers": [], "etcd": None,
                      "nodes": [], "key_file": key, "workers": workers, "memory": memory,
                      "node_args": list(node_args), "next": 1}
        self.save()
        sh("ip", "netns", "add", ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", ns, "link", "add", "slbr", "type", "bridge")
        sh("ip", "-n", ns, "addr", "add", f"{CLIENT_IP}/24", "dev", "slbr")
        sh("ip", "-n", ns, "link", "set", "slbr", "up")
        if etcd:
            self.state["etcd"] = self.start_etcd()
            self.save()
        for i in range(controllers):
            self.state["controllers"].append(self.start_controller(i))
            self.save()
        for _ in range(nodes):
            self.add(wait=False)
        return self.wait_converged() if nodes else None

    def add(self, wait=True, extra=()):
        n = self.state["next"]
        self.state["next"] = n + 1
        self.state["nodes"].append(self.start_node(n, extra))
        self.save()
        return self.wait_converged() if wait else None

    def remove(self, name):
        node = next((x for x in self.state["nodes"] if x["name"] == name), None)
        if not node:
            raise SystemExit(f"cluster.sh: no node {name}")
        stop_pid(node["pid"])
        self.state["nodes"].remove(node)
        self.save()
        sh("ip", "netns", "del", node["exception_netns"], check=False)
        sh("ip", "-n", self.state["client_netns"], "link", "del", node["tap"], check=False)
        if self.state["nodes"]:
            self.wait_converged()

    def owned_keys(self, idx, keys):
        """The keys of @p keys whose slot node @p idx owns, by the table it
        serves (`stats table`: each slot's node as an index into its list
        of nodes)."""
        node = self.state["nodes"][idx]
        lines = stat_lines(node["local_tcp"], "table")
        ids = {int(v.split()[0]): int(v.split()[1]) for k, v in lines if k == "node"}
        slots = bytes.fromhex(next(v for k, v in lines if k == "slots"))
        me = cluster_stats(node["local_tcp"])["node_id"]
        return [k for k in keys if ids.get(slots[key_slot(k)]) == me]

    def restart(self, name, wait=True):
        """Start node NAME again (killed, or stopped here first), under its
        name, address and taps: it rejoins as the backup of its slots and
        serves them again once it holds their copies."""
        i = next((k for k, x in enumerate(self.state["nodes"]) if x["name"] == name), None)
        if i is None:
            raise SystemExit(f"cluster.sh: no node {name}")
        old = self.state["nodes"][i]
        stop_pid(old["pid"])
        sh("ip", "netns", "del", old["exception_netns"], check=False)
        sh("ip", "-n", self.state["client_netns"], "link", "del", old["tap"], check=False)
        self.state["nodes"][i] = self.start_node(int(name[1:]))
        self.save()
        return self.wait_converged() if wait else None

    def down(self):
        st = self.state or self.load()
        for x in st["nodes"] + st["controllers"] + ([st["etcd"]] if st.get("etcd") else []):
            stop_pid(x["pid"])
        for x in st["nodes"]:
            sh("ip", "netns", "del", x["exception_netns"], check=False)
            sh("ip", "link", "del", x["tap"], check=False)
        sh("ip", "netns", "del", st["client_netns"], check=False)
        if os.path.exists(self.path):
            os.unlink(self.path)


def stop_pid(pid, timeout=10):
    if not alive(pid):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except OSError:
        return
    deadline = time.time() + timeout
    while alive(pid) and time.time() < deadline:
        time.sleep(0.05)
    if alive(pid):
        os.kill(pid, signal.SIGKILL)
        while alive(pid):
            time.sleep(0.05)


def describe(c):
    st = c.state
    print(f"cluster up in {c.dir} ({len(st['nodes'])} nodes, controller(s) "
          f"{', '.join(x['addr'] for x in st['controllers'])}"
          f"{', etcd ' + st['etcd']['url'] if st['etcd'] else ''})")
    for n in st["nodes"]:
        print(f"  {n['name']}: {n['ip']}:11211 (UDP, TCP) in netns {st['client_netns']}, "
              f"TCP {n['local_tcp']}")
    ctl = st["controllers"][0]["addr"]
    print("try:")
    print(f"  printf 'set k 0 0 2\\r\\nhi\\r\\nget k\\r\\n' | nc -q1 127.0.0.1 11211")
    print(f"  scripts/cluster.sh exec --dir {c.dir} nc -q1 {st['nodes'][-1]['ip']} 11211")
    print(f"  python3 -c \"from pymemcache.client.base import Client; c = Client('127.0.0.1:11212'); "
          f"c.set('a', 'b'); print(Client('127.0.0.1:11213').get('a'))\"")
    print(f"  build/sluicectl --controller {ctl} --key-file {st['key_file']} status")


def main():
    ap = argparse.ArgumentParser(prog="cluster.sh")
    sub = ap.add_subparsers(dest="cmd", required=True)
    u = sub.add_parser("up")
    u.add_argument("--nodes", type=int, default=3)
    u.add_argument("--workers", type=int, default=1)
    u.add_argument("--memory", type=int, default=64)
    u.add_argument("--etcd", action="store_true")
    u.add_argument("--controllers", type=int, default=1)
    u.add_argument("--dir", default="/tmp/sluice-cluster")
    u.add_argument("--foreground", action="store_true",
                   help="stay until Ctrl-C, then remove everything")
    u.add_argument("--node-arg", action="append", default=[],
                   help="one more argument for every sluiced (repeatable)")
    a = sub.add_parser("add")
    a.add_argument("--dir", default="/tmp/sluice-cluster")
    r = sub.add_parser("remove")
    r.add_argument("name")
    r.add_argument("--dir", default="/tmp/sluice-cluster")
    rs = sub.add_parser("restart")
    rs.add_argument("name")
    rs.add_argument("--dir", default="/tmp/sluice-cluster")
    e = sub.add_parser("exec")
    e.add_argument("--dir", default="/tmp/sluice-cluster")
    e.add_argument("argv", nargs=argparse.REMAINDER)
    d = sub.add_parser("down")
    d.add_argument("--dir", default="/tmp/sluice-cluster")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("cluster.sh: needs root (namespaces, taps)")
    c = Cluster(args.dir)
    if args.cmd == "up":
        if args.controllers > 1 and not args.etcd:
            raise SystemExit("cluster.sh: several controllers need --etcd (one leads)")
        if not 1 <= args.controllers <= 3:
            raise SystemExit("cluster.sh: --controllers must be 1-3")
        if args.nodes < 1 or args.nodes > 200:
            raise SystemExit("cluster.sh: --nodes must be 1-200")
        try:
            c.up(args.nodes, args.workers, args.memory, args.controllers, args.node_arg,
                 etcd=args.etcd)
        except BaseException:
            if c.state:
                c.down()
            raise
        describe(c)
        if args.foreground:
            print("Ctrl-C stops the cluster and removes everything it made")
            stop = []
            signal.signal(signal.SIGINT, lambda *_: stop.append(1))
            signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
            while not stop:
                time.sleep(0.2)
            c.down()
            print("cluster down")
    elif args.cmd == "add":
        c.load()
        c.add()
        print(f"added {c.state['nodes'][-1]['name']} at {c.state['nodes'][-1]['ip']}")
    elif args.cmd == "remove":
        c.load()
        c.remove(args.name)
    elif args.cmd == "restart":
        c.load()
        c.restart(args.name)
    elif args.cmd == "exec":
        st = c.load()
        argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
        if not argv:
            raise SystemExit("cluster.sh exec: a command, please")
        os.execvp("ip", ["ip", "netns", "exec", st["client_netns"]] + argv)
    elif args.cmd == "down":
        if os.path.exists(c.path):
            c.down()


if __name__ == "__main__":
    main()
