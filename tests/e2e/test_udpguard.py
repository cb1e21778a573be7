"""The UDP amplification guard: a node is no reflector.

The node is 198.18.11.1/24: its own prefix is trusted. 198.19.0.0/16 is
allowed (--udp-allow), within the budget; 198.18.12.0/24 is neither. The
client namespace holds an address of each kind on its tap, and a raw
socket there forges sources. Bytes are counted on the client's side of the
wire: what was sent, and every reply frame an AF_PACKET socket sees."""
import os
import random
import socket
import struct
import threading
import time

import pytest

from sluice_harness import InNetns, Node, tcp_exchange

TRUSTED, ALLOWED, DENIED = "198.18.11.2", "198.19.11.2", "198.18.12.2"
VALUE = b"v" * 10000  # one get of 45 bytes, a reply of ~10.3 KB: 230x without the guard


@pytest.fixture(scope="module")
def gnode():
    n = Node(idx=11, workers=2, memory=64, extra=["--udp-allow", "198.19.0.0/16"])
    try:
        n.start()
        for a in (ALLOWED, DENIED):
            n.netns_run("ip", "addr", "add", a + "/24", "dev", n.dp_if, check=True)
        s = n.tcp_local()
        assert tcp_exchange(s, b"set big 0 0 %d\r\n" % len(VALUE) + VALUE + b"\r\n", b"\r\n") == b"STORED\r\n"
        huge = b"h" * 100000
        assert tcp_exchange(s, b"set huge 0 0 %d\r\n" % len(huge) + huge + b"\r\n", b"\r\n") == b"STORED\r\n"
        s.close()
        yield n
    finally:
        assert n.stop() == 0


def sock_from(node, addr):
    with InNetns(node.cns):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((addr, 0))
    return s


def ask(node, s, payload, rid=1, timeout=1.0):
    return node.udp(payload, req_id=rid, sock=s, timeout=timeout)


def test_a_stranger_gets_nothing(gnode):
    n = gnode
    before = int(n.stats()["drop_udp_not_allowed"])
    s = sock_from(n, DENIED)
    for i in range(5):
        with pytest.raises(socket.timeout):
            ask(n, s, b"version\r\n", rid=i + 1, timeout=0.3)
    s.close()
    assert int(n.stats()["drop_udp_not_allowed"]) - before == 5
    # the node's own network is trusted, and TCP is for everyone
    t = sock_from(n, TRUSTED)
    assert ask(n, t, b"get big\r\n") == b"VALUE big 0 10000\r\n" + VALUE + b"\r\nEND\r\n"
    t.close()


def test_too_large_for_udp_is_told_to_use_tcp(gnode):
    n = gnode
    s = sock_from(n, ALLOWED)
    assert ask(n, s, b"get huge\r\n") == b"SERVER_ERROR object too large for UDP, use TCP\r\n"
    s.close()
    t = sock_from(n, TRUSTED)
    assert ask(n, t, b"get huge\r\n").startswith(b"VALUE huge 0 100000\r\n")
    t.close()
    assert int(n.stats()["udp_reply_too_large"]) >= 1


class Sniffer:
    """Counts the IP bytes of reply frames from the node seen on the
    client's tap, by destination."""

    def __init__(self, node):
        self.node = node
        with InNetns(node.cns):
            self.s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
            self.s.bind((node.dp_if, 0))
        self.s.settimeout(0.2)
        self.by_dst = {}
        self.done = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        node_ip = socket.inet_aton(self.node.ip)
        while not self.done.is_set():
            try:
                f = self.s.recv(65536)
            except socket.timeout:
                continue
            ip = f[14:]
            if len(ip) < 28 or ip[9] != 17 or ip[12:16] != node_ip:
                continue
            if struct.unpack(">H", ip[20:22])[0] != 11211:
                continue
            dst = socket.inet_ntoa(ip[16:20])
            self.by_dst[dst] = self.by_dst.get(dst, 0) + struct.unpack(">H", ip[2:4])[0]

    def stop(self):
        time.sleep(0.5)
        self.done.set()
        self.t.join()
        self.s.close()


def test_an_allowed_source_is_held_to_the_factor(gnode):
    n = gnode
    sn = Sniffer(n)
    s = sock_from(n, ALLOWED)
    # one ordinary large reply goes out whole (the burst allowance)
    assert ask(n, s, b"get big\r\n", rid=7) == b"VALUE big 0 10000\r\n" + VALUE + b"\r\nEND\r\n"
    s.setblocking(False)
    req = struct.pack(">HHHH", 9, 0, 1, 0) + b"get big\r\n"
    sent_in = 20 + 8 + len(req)  # the first request, above
    for i in range(3000):
        s.sendto(req, (n.ip, 11211))
        sent_in += 20 + 8 + len(req)
        try:
            while s.recv(65536):
                pass
        except BlockingIOError:
            pass
        if i % 200 == 0:
            time.sleep(0.01)
    s.close()
    sn.stop()
    out = sn.by_dst.get(ALLOWED, 0)
    ratio = out / sent_in
    print(f"allowed source: {sent_in} bytes in, {out} bytes out, {ratio:.2f}x")
    # factor 10, plus the one largest reply it may owe and the debt
    # forgiven during the run (16 KiB a second)
    assert out <= 10 * sent_in + 3 * 16384, f"{ratio:.1f}x"
    assert out > 5 * sent_in, "the budget it has should be used"
    st = n.stats()
    assert int(st["udp_over_budget"]) + int(st["udp_over_budget_silent"]) > 0
    top = tcp_exchange(n.tcp_local(), b"stats udpsources\r\n", b"END\r\n").decode()
    assert f"STAT {ALLOWED}:bytes_out" in top, top


def checksum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack(f">{len(b) // 2}H", b))
    s = (s >> 16) + (s & 0xffff)
    s += s >> 16
    return ~s & 0xffff


def forged(src, dst, sport, payload):
    udp = struct.pack(">HHHH", sport, 11211, 8 + len(payload), 0) + payload
    hdr = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), random.getrandbits(16), 0, 64, 17, 0,
                      socket.inet_aton(src), socket.inet_aton(dst))
    hdr = hdr[:10] + struct.pack(">H", checksum(hdr)) + hdr[12:]
    return hdr + udp


def test_forged_sources_flood_stays_within_the_factor_and_trusted_clients_are_served(gnode):
    n = gnode
    sn = Sniffer(n)
    with InNetns(n.cns):
        raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    payload = struct.pack(">HHHH", 3, 0, 1, 0) + b"get big\r\n"
    sent_in = 0
    stop = threading.Event()
    trusted_ok = []

    def trusted():
        t = sock_from(n, TRUSTED)
        i = 0
        while not stop.is_set():
            i += 1
            try:
                r = ask(n, t, b"get big\r\n", rid=i % 60000 + 1, timeout=1.0)
                trusted_ok.append(r == b"VALUE big 0 10000\r\n" + VALUE + b"\r\nEND\r\n")
            except socket.timeout:
                trusted_ok.append(False)
        t.close()

    th = threading.Thread(target=trusted)
    th.start()
    rng = random.Random(1)
    try:
        for i in range(20000):
            src = f"198.19.{rng.randrange(256)}.{rng.randrange(1, 255)}"
            if src == ALLOWED:
                continue
            pkt = forged(src, n.ip, rng.randrange(1024, 65535), payload)
            raw.sendto(pkt, (n.ip, 0))
            sent_in += len(pkt)
            if i % 500 == 0:
                time.sleep(0.005)
    finally:
        stop.set()
        th.join()
        raw.close()
        sn.stop()
    out = sum(v for d, v in sn.by_dst.items() if d.startswith("198.19.") and d != ALLOWED)
    ratio = out / sent_in
    print(f"forged sources: {sent_in} bytes in, {out} bytes out, {ratio:.2f}x; "
          f"trusted gets {sum(trusted_ok)}/{len(trusted_ok)} right")
    # all forged sources together: factor 10 plus four largest replies
    assert out <= 10 * sent_in + 4 * 16384 + 16384, f"{ratio:.1f}x"
    assert len(trusted_ok) > 20 and sum(trusted_ok) >= 0.95 * len(trusted_ok)
    st = n.stats()
    assert int(st["udp_source_evictions"]) > 0
