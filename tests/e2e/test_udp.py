"""The kernel-bypass fast path: memcached over UDP with its frame header."""
import socket
import struct
import time

import pytest

from sluice_harness import recv_message


def test_set_get_over_udp(clean):
    n = clean
    assert n.udp(b"set k 5 0 3\r\nabc\r\n") == b"STORED\r\n"
    assert n.udp(b"get k\r\n") == b"VALUE k 5 3\r\nabc\r\nEND\r\n"
    assert n.udp(b"get nothere\r\n") == b"END\r\n"


def test_multiget_across_workers_keeps_order(clean):
    n = clean
    keys = [f"key{i}" for i in range(60)]
    for k in keys:
        assert n.udp(f"set {k} 0 0 {len(k)}\r\n{k}\r\n".encode()) == b"STORED\r\n"
    reply = n.udp(("get " + " ".join(keys) + "\r\n").encode())
    want = b"".join(f"VALUE {k} 0 {len(k)}\r\n{k}\r\n".encode() for k in keys) + b"END\r\n"
    assert reply == want
    st = n.stats()
    # keys are spread over both workers, and requests were handed over
    assert int(st["core0:curr_items"]) > 10 and int(st["core1:curr_items"]) > 10
    assert int(st["core0:handoffs_in"]) + int(st["core1:handoffs_in"]) > 0


def test_large_reply_spans_numbered_datagrams(clean):
    n = clean
    s = n.udp_socket()
    big = bytes((i * 7) % 251 for i in range(4000))
    # a 4 KiB request is fragmented by the client's kernel and reassembled
    # by sluiced (rte_ip_frag)
    assert n.udp(b"set big 0 0 4000\r\n" + big + b"\r\n", sock=s) == b"STORED\r\n"
    s.settimeout(2)
    s.sendto(struct.pack(">HHHH", 77, 0, 1, 0) + b"get big big big\r\n", (n.ip, 11211))
    seqs, total, parts = [], None, {}
    while total is None or len(parts) < total:
        d, _ = s.recvfrom(65536)
        rid, seq, cnt, res = struct.unpack(">HHHH", d[:8])
        assert rid == 77 and res == 0
        total = cnt
        parts[seq] = d[8:]
        seqs.append(seq)
        assert len(d) <= 1400  # header included, as memcached
    assert sorted(seqs) == list(range(total)) and total > 1
    body = b"".join(parts[i] for i in range(total))
    one = b"VALUE big 0 4000\r\n" + big + b"\r\n"
    assert body == one * 3 + b"END\r\n"


def test_eight_fragment_request_and_100k_reply(clean):
    n = clean
    # Debian's DPDK reassembles up to 8 fragments (RTE_LIBRTE_IP_FRAG_MAX_FRAG):
    # 11 KB is the largest round size that fits at MTU 1500
    v = bytes(i % 200 + 32 for i in range(11000))
    assert n.udp(b"set v 0 0 11000\r\n" + v + b"\r\n") == b"STORED\r\n"
    assert n.udp(b"get v\r\n") == b"VALUE v 0 11000\r\n" + v + b"\r\nEND\r\n"
    # replies have no such limit: ten copies, 80 datagrams
    body = n.udp(b"get" + b" v" * 10 + b"\r\n")
    assert body == (b"VALUE v 0 11000\r\n" + v + b"\r\n") * 10 + b"END\r\n"


def test_single_key_gets_answer_like_any_other(clean):
    """A datagram of exactly "get <key>\\r\\n" is answered in place in its own
    packet (sluiced's fast path); around the one-datagram limit it falls back
    to the general path. Either way the client sees the same thing: one
    well-formed message from the node's address and port, and the counters
    move as for any get."""
    n = clean
    s = n.udp_socket()
    s.settimeout(2)
    sizes = (0, 1, 64, 1300, 1313, 1314, 1369, 1370, 1400, 3000)
    for size in sizes:
        v = bytes(65 + (i * 13 + size) % 58 for i in range(size))
        assert n.udp(f"set v{size} {size} 0 {size}\r\n".encode() + v + b"\r\n") == b"STORED\r\n"
    before = n.stats()
    read = written = 0
    for i, size in enumerate(sizes):
        v = bytes(65 + (j * 13 + size) % 58 for j in range(size))
        req = f"get v{size}\r\n".encode()
        s.sendto(struct.pack(">HHHH", 1000 + i, 0, 1, 0) + req, (n.ip, 11211))
        parts, total = {}, None
        while total is None or len(parts) < total:
            d, src = s.recvfrom(65536)
            assert src == (n.ip, 11211)
            assert len(d) <= 1400
            rid, seq, cnt, res = struct.unpack(">HHHH", d[:8])
            assert (rid, res) == (1000 + i, 0) and seq < cnt
            total = cnt
            parts[seq] = d[8:]
        body = b"".join(parts[j] for j in range(total))
        want = f"VALUE v{size} {size} {size}\r\n".encode() + v + b"\r\nEND\r\n"
        assert body == want, size
        assert total == (len(want) + 1391) // 1392, size
        read += len(req)
        written += len(want)
    for i in range(5):
        req = f"get missing{i}\r\n".encode()
        assert n.udp(req) == b"END\r\n"
        read += len(req)
        written += 5
    after = n.stats()
    d = {k: int(after[k]) - int(before[k]) for k in ("cmd_get", "get_hits", "get_misses", "bytes_read", "bytes_written")}
    # the "stats" command that read "after" counts too
    assert d["cmd_get"] == len(sizes) + 5
    assert d["get_hits"] == len(sizes) and d["get_misses"] == 5
    assert d["bytes_read"] == read + len(b"stats\r\n")
    assert d["bytes_written"] >= written  # plus the first stats reply


def test_key_with_a_lone_cr(clean):
    """memcached splits keys at spaces only: "f\\ro" is one key, over TCP and
    UDP alike (the UDP pre-pass once hashed only "f" of it)."""
    n = clean
    s = n.tcp_local()
    s.sendall(b"set f\ro 0 0 1\r\nx\r\n")
    assert s.recv(100) == b"STORED\r\n"
    s.close()
    assert n.udp(b"get f\ro\r\n") == b"VALUE f\ro 0 1\r\nx\r\nEND\r\n"
    # back to back, so that they arrive in bursts and meet the pre-pass
    u = n.udp_socket()
    u.settimeout(2)
    for i in range(64):
        u.sendto(struct.pack(">HHHH", i, 0, 1, 0) + b"get f\ro\r\n", (n.ip, 11211))
    for i in range(64):
        d, _ = u.recvfrom(65536)
        assert d[8:] == b"VALUE f\ro 0 1\r\nx\r\nEND\r\n"
    assert n.udp(b"get f\ro f\ro\r\n") == b"VALUE f\ro 0 1\r\nx\r\n" * 2 + b"END\r\n"
    assert n.udp(b"get f\r\n") == b"END\r\n"


def drop_count(n, reason):
    return int(n.stats()["drop_" + reason])


def test_bad_frames_are_dropped_and_counted(clean):
    n = clean
    s = n.udp_socket()
    s.settimeout(0.3)
    before = {r: drop_count(n, r) for r in ("multi_datagram", "short_frame", "incomplete_request")}
    s.sendto(struct.pack(">HHHH", 1, 1, 1, 0) + b"get a\r\n", (n.ip, 11211))  # seq != 0
    s.sendto(struct.pack(">HHHH", 2, 0, 2, 0) + b"get a\r\n", (n.ip, 11211))  # count != 1
    s.sendto(struct.pack(">HHHH", 3, 0, 0, 0) + b"get a\r\n", (n.ip, 11211))  # count == 0
    s.sendto(b"\x00\x01\x00", (n.ip, 11211))                                  # short
    s.sendto(struct.pack(">HHHH", 4, 0, 1, 0) + b"get a", (n.ip, 11211))     # no newline
    with pytest.raises(socket.timeout):
        s.recvfrom(65536)
    time.sleep(0.2)
    assert drop_count(n, "multi_datagram") == before["multi_datagram"] + 3
    assert drop_count(n, "short_frame") == before["short_frame"] + 1
    assert drop_count(n, "incomplete_request") == before["incomplete_request"] + 1
    # the node is still fine
    assert n.udp(b"version\r\n").startswith(b"VERSION ")


def test_protocol_errors_get_memcached_replies_over_udp(clean):
    n = clean
    assert n.udp(b"bogus\r\n") == b"ERROR\r\n"
    assert n.udp(b"set k 0 0 z\r\n") == b"CLIENT_ERROR bad command line format\r\n"
    assert n.udp(b"get " + b"k" * 251 + b"\r\n") == b"CLIENT_ERROR bad command line format\r\n"
    assert n.udp(b"set k 0 0 1\r\nXYZ\r\n") == b"CLIENT_ERROR bad data chunk\r\nERROR\r\n"


def test_several_commands_in_one_datagram(clean):
    n = clean
    r = n.udp(b"set a 0 0 1\r\n1\r\nset b 0 0 1 noreply\r\n2\r\nget a b\r\nmn\r\n")
    assert r == b"STORED\r\nVALUE a 0 1\r\n1\r\nVALUE b 0 1\r\n2\r\nEND\r\nMN\r\n"


def test_non_udp_junk_does_not_hurt(clean):
    n = clean
    # raw IP with an unknown protocol number, to the node
    with __import__("sluice_harness").InNetns(n.cns):
        r = socket.socket(socket.AF_INET, socket.SOCK_RAW, 253)
    for i in range(50):
        r.sendto(bytes(range(i)), (n.ip, 0))
    r.close()
    # UDP to a port nobody serves goes to the kernel, which answers nothing
    s = n.udp_socket()
    s.sendto(b"hello", (n.ip, 9))
    s.close()
    assert n.udp(b"version\r\n").startswith(b"VERSION ")


def test_arp_and_ping(node):
    before = node.stats()
    # forget the node's MAC so that the client must ask for it again
    node.netns_run("ip", "neigh", "flush", "all")
    r = node.netns_run("ping", "-c", "3", "-i", "0.2", "-W", "2", node.ip)
    assert r.returncode == 0, r.stdout + r.stderr
    after = node.stats()
    assert int(after["icmp_replies"]) >= int(before["icmp_replies"]) + 3
    assert int(after["arp_replies"]) >= int(before["arp_replies"]) + 1
