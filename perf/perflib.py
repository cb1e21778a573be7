"""What the perf scripts (compare, memory.py, pcap-replay) and the tests that
drive them share: starting and stopping a server process, its resident
memory, a node's stats over TCP, and reading a pcap file."""
import signal
import socket
import struct
import subprocess
import sys
import time


def memif_bench(bench, eal, prefix, sock, args, out, quiet=False, server_ip="198.18.0.1",
                nice=False):
    """sluice-bench on CPU 1 as the memif client of @sock, 198.18.0.2 asking
    @server_ip, writing its JSON to @out; returns it. @nice: at nice 19, so
    that a node sharing CPU 1 gets it whenever it has work."""
    import json
    # never let DPDK probe this machine's own network device
    eal = (["--no-pci"] if "--no-pci" not in eal else []) + list(eal)
    cmd = (["nice", "-n", "19"] if nice else []) + ["taskset", "-c", "1", bench] + eal + [
        "--file-prefix", prefix, "--lcores", "0@1",
        "--vdev", f"net_memif0,role=client,socket={sock}",
        "--", "--mode", "dpdk", "--server-ip", server_ip,
        "--client-ip", "198.18.0.2", "--out", out] + args
    for attempt in range(3):
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        # a memif server sometimes refuses a client right after the last
        # one left; try again
        if r.returncode == 0 or "Failed to connect socket" not in r.stderr + r.stdout:
            break
        time.sleep(1)
    if r.returncode != 0:
        sys.exit(f"sluice-bench failed: {r.stdout}{r.stderr}")
    if not quiet:
        print("   ", [l for l in r.stdout.splitlines() if ": " in l and "ops/s" in l][-1], flush=True)
    return json.load(open(out))


def start(cmd, ready=None, log=None, env=None):
    """Start @cmd with its output in @log; wait until @ready appears there
    (or briefly, when no marker is given). Exits if the process dies."""
    p = subprocess.Popen(cmd, stdout=open(log, "w") if log else subprocess.DEVNULL,
                         stderr=subprocess.STDOUT, env=env)
    for _ in range(100):
        if p.poll() is not None:
            sys.exit(f"{cmd[0]} exited: " + (open(log).read() if log else ""))
        if ready is None or ready in open(log).read():
            break
        time.sleep(0.1)
    time.sleep(0.5)
    return p


def stop(p):
    """SIGINT (DPDK processes clean up their memory and sockets on it),
    then SIGKILL if it does not exit."""
    if p.poll() is not None:
        return
    p.send_signal(signal.SIGINT)
    try:
        p.wait(timeout=15)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def rss(pid):
    """Resident bytes of process @pid."""
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def stats(port, host="127.0.0.1", which=""):
    """A memcached-protocol server's "stats [which]" as a dict of strings
    (a value is the rest of its line)."""
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall(b"stats" + (b" " + which.encode() if which else b"") + b"\r\n")
        buf = b""
        while not buf.endswith(b"END\r\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    return {l.split(" ", 2)[1]: l.split(" ", 2)[2] for l in buf.decode().splitlines()
            if l.startswith("STAT ")}


def pcap_records(path):
    """The packets of a classic little-endian pcap file, as bytes."""
    d = open(path, "rb").read()
    if len(d) < 24 or struct.unpack("<I", d[:4])[0] not in (0xA1B2C3D4, 0xA1B23C4D):
        raise ValueError(f"{path}: not a little-endian pcap file")
    out, off = [], 24
    while off + 16 <= len(d):
        incl = struct.unpack("<I", d[off + 8:off + 12])[0]
        out.append(d[off + 16:off + 16 + incl])
        off += 16 + incl
    return out
