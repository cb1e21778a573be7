"""A request stream written by sluice-bench --write-pcap, replayed into
sluiced by Debian's dpdk-testpmd (net_pcap -> memif) with perf/pcap-replay:
every request arrives, every one is answered, and the replies testpmd wrote
back to a pcap are the right memcached replies to the right requests."""
import os
import struct
import subprocess
import sys

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
