"""Differential run: identical requests to stock memcached (Debian's
memcached, the reference) and to sluiced; replies must be identical, over
TCP and over UDP.

CAS values differ between servers by construction (memcached counts per
server, Sluice per core), so they are normalised; a request may say {cas}
for the CAS the same server returned last."""
import re
import socket
import struct

import pytest


K250 = "k" * 250
K251 = "k" * 251

CASES = [
    # storage and retrieval
    ["set a 0 0 1\r\n1\r\n", "get a\r\n", "gets a\r\n", "get a a a\r\n"],
    ["set a 4294967295 0 3\r\nabc\r\n", "get a\r\n"],
    ["set a 4294967296 0 3\r\nabc\r\n", "get a\r\n"],
    ["set a -1 0 3\r\nabc\r\n", "get a\r\n"],
    ["set a 0 0 0\r\n\r\n", "get a\r\n"],
    ["add a 0 0 1\r\n1\r\n", "add a 0 0 1\r\n2\r\n", "get a\r\n"],
    ["replace a 0 0 1\r\n1\r\n", "set a 1 0 1\r\n1\r\n", "replace a 2 0 1\r\n2\r\n", "get a\r\n"],
    ["append a 0 0 1\r\n1\r\n", "prepend a 0 0 1\r\n1\r\n"],
    ["set a 7 0 2\r\nbb\r\n", "append a 9 0 2\r\ncc\r\n", "prepend a 9 0 2\r\naa\r\n", "get a\r\n"],
    ["set a 0 0 1\r\n1\r\n", "gets a\r\n", "cas a 0 0 1 {cas}\r\n2\r\n", "cas a 0 0 1 {cas}\r\n3\r\n", "get a\r\n"],
    ["cas nope 0 0 1 5\r\n1\r\n", "cas a 0 0 1 x\r\n1\r\n", "cas a 0 0 1\r\n"],
    ["set a 0 0 1\r\n1\r\n", "gets a\r\n", "append a 0 0 1\r\n2\r\n", "cas a 0 0 1 {cas}\r\n3\r\n"],
    [f"set {K250} 0 0 1\r\n1\r\n", f"get {K250}\r\n", f"set {K251} 0 0 1\r\n1\r\n", f"get {K251}\r\n"],
    [f"get a {K251} b\r\n", f"delete {K251}\r\n", f"incr {K251} 1\r\n", f"touch {K251} 1\r\n"],
    ["get " + " ".join(f"m{i}" for i in range(40)) + "\r\n"],
    ["set m5 0 0 2\r\nv5\r\n", "get " + " ".join(f"m{i}" for i in range(40)) + "\r\n"],
    # noreply
    ["set a 0 0 1 noreply\r\n1\r\n", "get a\r\n", "add a 0 0 1 noreply\r\n1\r\n",
     "delete a noreply\r\n", "get a\r\n", "incr a 1 noreply\r\n", "touch a 1 noreply\r\n"],
    ["set a 0 0 1 noreply\r\nXY\r\n", "get a\r\n"],
    ["set a 0 0 z noreply\r\n", "get a\r\n"],
    # bad data and bad lines
    ["set a 0 0 1\r\nXY\r\n", "get a\r\n"],
    ["set a 0 0 3\r\nabcd\r\n"],
    ["set a 0 0\r\n", "set a 0 0 1 2 3\r\n", "set a b 0 1\r\n", "set a 0 b 1\r\n", "set a 0 0 -1\r\n"],
    ["set a 0 0 2147483647\r\n"],
    ["bogus\r\n", "GETT a\r\n", "gets\r\n", "g\r\n", "\r\n", "  \r\n", "get\r\n", "m\r\n", "mz a\r\n"],
    ["get a\n", "set a 0 0 1\n1\r\n", "get a\n"],
    ["verbosity\r\n", "verbosity 1\r\n", "verbosity x\r\n", "verbosity 1 noreply\r\n"],
    # arithmetic
    ["incr n 1\r\n", "decr n 1\r\n", "set n 0 0 2\r\n10\r\n", "incr n 5\r\n", "decr n 100\r\n", "get n\r\n"],
    ["set n 0 0 20\r\n18446744073709551615\r\n", "incr n 1\r\n", "get n\r\n"],
    ["set n 0 0 1\r\n9\r\n", "incr n 18446744073709551615\r\n", "incr n 1\r\n", "get n\r\n"],
    ["set n 0 0 2\r\nab\r\n", "incr n 1\r\n", "set n 0 0 2\r\n-1\r\n", "incr n 1\r\n"],
    ["set n 0 0 3\r\n 12\r\n", "incr n 1\r\n", "incr n -1\r\n", "incr n abc\r\n", "incr n 18446744073709551616\r\n"],
    ["set n 0 0 0\r\n\r\n", "incr n 1\r\n"],
    # ttl and touch
    ["set t 0 100 1\r\nx\r\n", "touch t 10\r\n", "touch u 10\r\n", "touch t abc\r\n", "get t\r\n"],
    ["set t 0 -1 1\r\nx\r\n", "get t\r\n", "set t 0 1 1\r\nx\r\n", "gat -1 t\r\n", "get t\r\n"],
    ["set t 3 0 1\r\nx\r\n", "gat 100 t u\r\n", "gats 100 t\r\n", "gat abc t\r\n", "gat 100\r\n"],
    ["set t 0 1000000000 1\r\nx\r\n", "get t\r\n", "set t 0 4102444800 1\r\nx\r\n", "get t\r\n"],
    # delete forms
    ["set d 0 0 1\r\nx\r\n", "delete d 0\r\n", "delete d\r\n", "delete d 5\r\n", "delete d 0 noreply\r\n",
     "delete d noreply x\r\n", "delete\r\n"],
    # flush_all
    ["set f 0 0 1\r\nx\r\n", "flush_all\r\n", "get f\r\n", "set f 0 0 1\r\ny\r\n", "get f\r\n"],
    ["flush_all noreply\r\n", "flush_all 0\r\n", "flush_all x\r\n", "flush_all 1 2 3\r\n"],
    # meta
    ["ms m 3\r\nabc\r\n", "mg m v\r\n", "mg m s f t v k\r\n", "mg m O123 k q\r\n", "mg none v\r\n",
     "mg none v q\r\n", "mg none k O55\r\n", "mn\r\n"],
    ["ms m 3 T100 F33 c\r\nabc\r\n", "mg m t f s\r\n", "ms m 2 MA\r\nde\r\n", "mg m v\r\n",
     "ms m 1 MP\r\nz\r\n", "mg m v\r\n", "ms m 1 ME\r\nq\r\n", "ms n 1 MR\r\nq\r\n",
     "ms n 1 ME\r\nq\r\n", "ms n 1 MX\r\nq\r\n"],
    ["ms m 1 q\r\na\r\n", "ms m 1 q C1\r\nb\r\n", "mg m v\r\n", "ms m 1 S2\r\nab\r\n"],
    ["mg m v v\r\n", "mg m !\r\n", "mg m T\r\n", "mg m Tx\r\n", "ms m\r\n", "ms m x\r\n",
     "ms m -1\r\n", "md m !\r\n", "ma m !\r\n", "ma m MZ\r\n", "mg\r\n", "ms m 2 v v\r\nab\r\n"],
    ["mg m O" + "x" * 40 + "\r\n", "ms m 1 O" + "y" * 40 + "\r\na\r\n"],
    ["mg " + K251 + " v\r\n", "ms " + K251 + " 1\r\na\r\n", "md " + K251 + "\r\n"],
    ["ms m 2\r\nhi\r\n", "mg m c\r\n", "ms m 2 C{cas} c\r\nho\r\n", "ms m 2 C1\r\nxx\r\n",
     "md m C1\r\n", "md m q\r\n", "md m\r\n", "md m q\r\n", "mn\r\n"],
    ["ma c\r\n", "ma c q\r\n", "ma c N0 J10 v\r\n", "ma c v t\r\n", "ma c D5 MD v\r\n",
     "ma c MI D3 v k O1\r\n", "ma c M- D100 v\r\n", "ma c MX\r\n", "ma c D-1\r\n", "ma c Jx N0\r\n"],
    ["ms s 3\r\nabc\r\n", "ma s\r\n"],
    ["mg v N30 s t v\r\n", "mg v N30 s\r\n", "mg v v\r\n", "ms v 3 T60\r\nnew\r\n", "mg v v\r\n",
     "md v I T30\r\n", "mg v v c\r\n", "mg v v\r\n", "ms v 3 I C{cas}\r\nfix\r\n", "mg v v\r\n"],
    ["ms r 1 T10\r\nx\r\n", "mg r R30 v\r\n", "mg r R30 v\r\n", "mg r R5 v\r\n"],
    ["ms Zm9v 1 b\r\nz\r\n", "get foo\r\n", "mg Zm9v b v k\r\n", "mg Zm9v= b v\r\n", "md Zm9v b\r\n", "get foo\r\n"],
    ["ms h 1\r\nx\r\n", "mg h h\r\n", "mg h h\r\n", "mg h u\r\n"],
    ["quit\r\n"],
]


def normalise(b):
    s = b.decode("latin-1")
    s = re.sub(r"^(VALUE \S+ \d+ \d+) \d+\r$", r"\1 <cas>\r", s, flags=re.M)
    s = re.sub(r"(?<=[ ])c\d+(?=[ \r])", "c<cas>", s)
    return s


def last_cas(b):
    s = b.decode("latin-1")
    found = re.findall(r"^VALUE \S+ \d+ \d+ (\d+)\r$", s, flags=re.M)
    found += re.findall(r"(?<=[ ])c(\d+)(?=[ \r])", s)
    return found[-1] if found else None


class TcpTarget:
    def __init__(self, sock):
        self.s = sock
        self.cas = "0"

    def run(self, step):
        req = step.replace("{cas}", self.cas).encode() + b"mn\r\n"
        self.s.sendall(req)
        # as many MN as were sent (a step may itself be "mn"); a reply that
        # arrives in pieces must not leak into the next step
        want = req.count(b"mn\r\n")
        out = b""
        self.s.settimeout(3)
        while out.count(b"MN\r\n") < want:
            try:
                chunk = self.s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            out += chunk
        assert out.endswith(b"MN\r\n") or step.startswith("quit"), (step, out)
        c = last_cas(out)
        if c:
            self.cas = c
        return out


class UdpTarget:
    """One request per datagram; memcached 1.6 sends a multi-key reply as
    several datagrams that all claim to be 0 of 1, so collect all datagrams
    of the request id up to the MN that closes it."""

    def __init__(self, sock, addr):
        self.s = sock
        self.addr = addr
        self.cas = "0"
        self.rid = 0

    def run(self, step):
        self.rid += 1
        req = step.replace("{cas}", self.cas).encode() + b"mn\r\n"
        self.s.settimeout(2)
        self.s.sendto(struct.pack(">HHHH", self.rid, 0, 1, 0) + req, self.addr)
        parts = []
        while True:
            try:
                d, _ = self.s.recvfrom(65536)
            except socket.timeout:
                break
            rid, seq, cnt, _ = struct.unpack(">HHHH", d[:8])
            if rid != self.rid:
                continue
            parts.append((seq, d[8:]))
            if b"".join(p for _, p in parts).endswith(b"MN\r\n") and len(parts) >= cnt:
                break
        # a proper message is ordered by sequence number; memcached's
        # all-zero sequence numbers keep arrival order (stable sort)
        out = b"".join(p for _, p in sorted(parts, key=lambda x: x[0]))
        c = last_cas(out)
        if c:
            self.cas = c
        return out


def flush(target):
    target.run("flush_all\r\n")


@pytest.mark.parametrize("case", range(len(CASES)))
def test_tcp_replies_match_memcached(clean, memcached, case):
    ref = TcpTarget(socket.create_connection(memcached, timeout=3))
    sut = TcpTarget(clean.tcp_local())
    try:
        flush(ref)
        for step in CASES[case]:
            a = normalise(ref.run(step))
            b = normalise(sut.run(step))
            assert b == a, f"step {step!r}\n memcached: {a!r}\n sluice:    {b!r}"
    finally:
        ref.s.close()
        sut.s.close()


# Over UDP memcached 1.6 stops reading a datagram after "mn" (it forces a
# write and drops the rest); Sluice goes on with the commands that follow.
# The harness ends every step with "mn", so a step that is itself "mn" is
# left out of the UDP comparison. quit has no UDP meaning.
UDP_SKIP = {"quit\r\n", "mn\r\n"}


@pytest.mark.parametrize("case", range(len(CASES)))
def test_udp_replies_match_memcached(clean, memcached, case):
    steps = [s for s in CASES[case] if s not in UDP_SKIP and len(s) < 1300]
    if not steps:
        pytest.skip("nothing to send over UDP")
    rs = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    ref = UdpTarget(rs, memcached)
    sut = UdpTarget(clean.udp_socket(), (clean.ip, 11211))
    flush(ref)
    for step in steps:
        a = normalise(ref.run(step))
        b = normalise(sut.run(step))
        assert b == a, f"step {step!r}\n memcached: {a!r}\n sluice:    {b!r}"
