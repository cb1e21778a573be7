"""Fill a node to a multiple of its memory limit over TCP and report the
resident memory of sluiced before and after. Used by test_memory.py and by
hand:  python3 tests/e2e/fill_memory.py [MiB] [value_size] [times]"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sluice_harness import ROOT, Node, tcp_exchange  # noqa: E402

sys.path.insert(0, os.path.join(ROOT, "perf"))
from perflib import rss  # noqa: E402



def fill(node, total_bytes, vsize, batch=200):
    s = node.tcp_local(timeout=30)
    val = b"v" * vsize
    n = total_bytes // vsize
    i = 0
    while i < n:
        k = min(batch, n - i)
        req = b"".join(b"set key:%d 0 0 %d noreply\r\n%s\r\n" % (i + j, vsize, val) for j in range(k))
        s.sendall(req)
        i += k
        if i % (batch * 20) == 0 or i >= n:
            # keep the pipeline bounded: wait for a round trip
            assert tcp_exchange(s, b"mn\r\n", b"MN\r\n", timeout=30).endswith(b"MN\r\n")
    s.close()
    return n


def measure(mib=64, vsize=4000, times=3, workers=1):
    node = Node(idx=3, workers=workers, memory=mib)
    node.start()
    try:
        base = rss(node.proc.pid) // 1024
        n = fill(node, times * mib * 1024 * 1024, vsize)
        time.sleep(0.5)
        st = node.stats()
        c = node.tcp_local()
        last = tcp_exchange(c, b"get key:%d\r\n" % (n - 1), b"END\r\n")
        c.close()
        return {
            "limit_mib": mib, "value_bytes": vsize, "items_written": n,
            "rss_start_kib": base, "rss_after_kib": rss(node.proc.pid) // 1024,
            "bytes": int(st["bytes"]), "limit_maxbytes": int(st["limit_maxbytes"]),
            "hash_bytes": int(st["hash_bytes"]), "curr_items": int(st["curr_items"]),
            "evictions": int(st["evictions"]),
            "last_key_intact": last == b"VALUE key:%d 0 %d\r\n%s\r\nEND\r\n" % (n - 1, vsize, b"v" * vsize),
        }
    finally:
        node.stop()


if __name__ == "__main__":
    mib = int(sys.argv[1]) if len(sys.argv) > 1 else 64
    vs = int(sys.argv[2]) if len(sys.argv) > 2 else 4000
    times = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    r = measure(mib, vs, times)
    for k, v in r.items():
        print(f"{k:16} {v}")
    grow = r["rss_after_kib"] - r["rss_start_kib"]
    print(f"{'rss_growth_mib':16} {grow / 1024:.1f} (limit {mib} MiB + index {r['hash_bytes'] / 1048576:.1f} MiB)")
