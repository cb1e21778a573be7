"""sluiced is not tied to net_tap: the same checks over a memif link (with
Debian's dpdk-testpmd forwarding between memif and a kernel tap) and over
net_af_packet on a veth pair."""
import pytest

from sluice_harness import Node, tcp_exchange


@pytest.mark.parametrize("port,idx", [("memif", 4), ("af_packet", 5)])
def test_node_on_other_ports(port, idx):
    n = Node(idx=idx, workers=2, port=port)
    try:
        n.start()
        assert n.udp(b"set p 0 0 5\r\nhello\r\n") == b"STORED\r\n"
        keys = [f"k{i}" for i in range(30)]
        for k in keys:
            assert n.udp(f"set {k} 0 0 2\r\nxx\r\n".encode()) == b"STORED\r\n"
        reply = n.udp(("get p " + " ".join(keys) + "\r\n").encode())
        assert reply.startswith(b"VALUE p 0 5\r\nhello\r\n") and reply.count(b"VALUE") == 31
        big = n.udp(b"get" + b" p" * 400 + b"\r\n")  # 8 datagrams
        assert big.count(b"hello") == 400
        s = n.tcp_dataplane()
        assert tcp_exchange(s, b"get p\r\n", b"END\r\n") == b"VALUE p 0 5\r\nhello\r\nEND\r\n"
        s.close()
        r = n.netns_run("ping", "-c", "2", "-i", "0.2", "-W", "2", n.ip)
        assert r.returncode == 0, r.stdout + r.stderr
    finally:
        assert n.stop() == 0
