"""The memory limit holds: filling a node to 3x its limit evicts, never
charges more than the limit, and resident memory grows by at most the limit
plus the index plus a fixed allowance (connection buffers, allocator
metadata). Numbers: python3 tests/e2e/fill_memory.py 64 4000 3"""
import pytest

from fill_memory import measure

ALLOWANCE_KIB = 8 * 1024  # buffers and jemalloc metadata, documented in the README


@pytest.mark.parametrize("vsize,workers", [(4000, 1), (100, 2)])
def test_fill_to_three_times_the_limit(vsize, workers):
    r = measure(mib=64, vsize=vsize, times=3, workers=workers)
    assert r["evictions"] > 0, r
    assert r["bytes"] <= r["limit_maxbytes"], r
    growth = r["rss_after_kib"] - r["rss_start_kib"]
    bound = r["limit_maxbytes"] // 1024 + r["hash_bytes"] // 1024 + ALLOWANCE_KIB
    assert growth <= bound, f"RSS grew {growth} KiB, bound {bound} KiB: {r}"
    # what is left is the most recent data, and it is intact
    assert r["last_key_intact"], r
    assert r["curr_items"] > 0.5 * r["limit_maxbytes"] / (vsize + 200), r
