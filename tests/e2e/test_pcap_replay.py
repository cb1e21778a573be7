"""A request stream written by sluice-bench --write-pcap, replayed into
sluiced by Debian's dpdk-testpmd (net_pcap -> memif) with perf/pcap-replay:
every request arrives, every one is answered, and the replies testpmd wrote
back to a pcap are the right memcached replies to the right requests; and
the requests sluice-bench generates (the bytes it sends, which --write-pcap
writes) are well-formed for the key shapes and distributions it offers."""
import collections
import os
import re
import struct
import subprocess
import sys

import pytest

from sluice_harness import ROOT

sys.path.insert(0, os.path.join(ROOT, "perf"))
from perflib import pcap_records as records  # noqa: E402

BENCH = os.path.join(ROOT, "build", "perf", "sluice-bench")
REPLAY = os.path.join(ROOT, "perf", "pcap-replay")
HDR = 14 + 20 + 8  # Ethernet, IPv4, UDP


def test_replayed_pcap_is_answered(tmp_path):
    req, rep = str(tmp_path / "req.pcap"), str(tmp_path / "rep.pcap")
    keys, count = 1000, 20000
    subprocess.run([BENCH, "--write-pcap", req, "--count", str(count), "--keys", str(keys),
                    "--key-size", "16", "--value-size", "64", "--get-ratio", "0.9", "--preload",
                    "--server-ip", "198.18.0.1", "--client-ip", "198.18.0.2"],
                   check=True, capture_output=True)
    sent = records(req)
    assert len(sent) == keys + count
    r = subprocess.run([REPLAY, req, rep], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    got = dict(l.split("=", 1) for l in r.stdout.splitlines() if "=" in l)
    assert int(got["rx_packets"]) == len(sent), got
    assert int(got["tx_packets"]) == len(sent), got
    assert int(got["replies_written"]) == len(sent), got
    assert int(got["get_misses"]) == 0, got  # the preload's sets came first
    assert int(got["curr_items"]) == keys, got

    # each reply answers its request: same frame id, and the reply fits the verb
    verb = {}
    for p in sent:
        rid = struct.unpack(">H", p[HDR:HDR + 2])[0]
        verb[rid] = p[HDR + 8:].split(b"\r\n")[0].split(b" ")  # [b"get", key] or [b"set", ...]
    seen = 0
    for p in records(rep):
        rid, seq, total = struct.unpack(">HHH", p[HDR:HDR + 6])
        body = p[HDR + 8:]
        assert (seq, total) == (0, 1)
        if verb[rid][0] == b"get":
            assert body.startswith(b"VALUE " + verb[rid][1] + b" 0 64\r\n"), body
            assert body.endswith(b"\r\nEND\r\n") and len(body) == len(verb[rid][1]) + 20 + 64, body
        else:  # "set ... noreply" then "mn": the set is silent, mn answers
            assert body == b"MN\r\n", body
        seen += 1
    assert seen == len(sent)


def ip_sum_ok(ip):
    s = sum(struct.unpack(">10H", ip[:20]))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s == 0xFFFF


@pytest.mark.parametrize("key_size,multiget,zipf", [(16, 1, 0), (6, 3, 0), (16, 1, 0.99)])
def test_generated_requests_are_well_formed(tmp_path, key_size, multiget, zipf):
    """What sluice-bench sends (the same bytes --write-pcap writes): valid
    IPv4/UDP headers and memcached requests of the asked shape, with keys
    "key:" + the key number zero-padded to key_size - 4 digits, the preload's
    sets first in key order, then the get:set mix over the key distribution."""
    path, keys, count, vs = str(tmp_path / "g.pcap"), 1000, 20000, 40
    subprocess.run([BENCH, "--write-pcap", path, "--count", str(count), "--keys", str(keys),
                    "--key-size", str(key_size), "--value-size", str(vs), "--get-ratio", "0.9",
                    "--multiget", str(multiget), "--zipf", str(zipf), "--preload",
                    "--server-ip", "198.18.0.1", "--client-ip", "198.18.0.2"],
                   check=True, capture_output=True)
    width = key_size - 4
    key_re = re.compile(rb"key:(\d{%d,})" % width)
    sent = records(path)
    assert len(sent) == keys + count
    sets, hits = 0, collections.Counter()
    for i, p in enumerate(sent):
        ip = p[14:34]
        assert ip[0] == 0x45 and ip[9] == 17 and ip_sum_ok(ip), (i, p[:42])
        assert struct.unpack(">H", ip[2:4])[0] == len(p) - 14
        assert ip[12:16] == bytes([198, 18, 0, 2]) and ip[16:20] == bytes([198, 18, 0, 1])
        assert struct.unpack(">HH", p[36:40]) == (11211, len(p) - 34)
        rid, seq, total = struct.unpack(">HHH", p[HDR:HDR + 6])
        assert (rid, seq, total) == (i & 0xFFFF, 0, 1)
        body = p[HDR + 8:]
        if body.startswith(b"set "):
            line, rest = body.split(b"\r\n", 1)
            m = key_re.fullmatch(line.split(b" ")[1])
            assert m and line == b"set %s 0 0 %d noreply" % (m.group(0), vs), line
            assert rest == b"x" * vs + b"\r\nmn\r\n"
            k = int(m.group(1))
            if i < keys:
                assert k == i  # the preload, in key order
            else:
                sets += 1
        else:
            assert i >= keys and body.startswith(b"get ") and body.endswith(b"\r\n"), body
            ks = body[4:-2].split(b" ")
            assert len(ks) == multiget, body
            for kk in ks:
                m = key_re.fullmatch(kk)
                assert m, body
                k = int(m.group(1))
                hits[k] += 1
        assert 0 <= k < keys
        assert len(m.group(1)) == max(width, len(str(k)))
    assert 0.08 < sets / count < 0.12, sets  # --get-ratio 0.9
    assert len(hits) > (0.5 if zipf else 0.95) * keys, len(hits)  # the whole key space
    top = hits.most_common(1)[0][1] / sum(hits.values())
    if zipf:
        assert 0.08 < top < 0.20, top  # rank 1 of Zipf(0.99) over 1000 keys: ~13%
    else:
        assert top < 0.01, top
