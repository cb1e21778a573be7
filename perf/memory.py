#!/usr/bin/env python3
"""Resident memory per item beyond key and value: 1M items of 16-byte keys
and 64-byte values, sluiced (1 worker, over memif, filled by sluice-bench)
beside stock memcached (filled over loopback UDP by the same generator),
both with the same memory limit.   perf/memory.py [--mib 1024] [--keys 1000000]"""
import argparse
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from perflib import rss, start, stop  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
B = os.path.join(ROOT, "build")
EAL = ["--no-pci", "--no-huge", "-m", "2048", "--log-level", "*:error"]


def fill(args):
    r = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=1024)
    ap.add_argument("--keys", type=int, default=1000000)
    a = ap.parse_args()
    wl = ["--keys", str(a.keys), "--key-size", "16", "--value-size", "64", "--preload",
          "--duration", "0.1", "--window", "64", "--get-ratio", "1"]
    payload = 16 + 64
    sock = f"/run/sluice-mem-{os.getpid()}.sock"
    p = start([os.path.join(B, "sluiced")] + EAL + ["--file-prefix", "memsl", "--lcores", "0@0,1@0",
               "--vdev", f"net_memif0,role=server,socket={sock}", "--", "--ip", "198.18.0.1/24",
               "--tcp", "off", "--workers", "1", "--memory", str(a.mib)],
              "sluiced: ready", f"/tmp/sluice-mem-{os.getpid()}.log")
    r0 = rss(p.pid)
    fill([os.path.join(B, "perf", "sluice-bench")] + EAL + ["--file-prefix", "memg", "--lcores", "0@1",
         "--vdev", f"net_memif0,role=client,socket={sock}", "--", "--mode", "dpdk", "--server-ip",
         "198.18.0.1", "--client-ip", "198.18.0.2"] + wl)
    time.sleep(0.5)
    r1 = rss(p.pid)
    stop(p)
    s_per = (r1 - r0) / a.keys - payload

    port = 43000 + os.getpid() % 1000
    m = start(["memcached", "-u", "nobody", "-t", "1", "-m", str(a.mib), "-l", "127.0.0.1",
               "-p", str(port), "-U", str(port)])
    m0 = rss(m.pid)
    fill([os.path.join(B, "perf", "sluice-bench"), "--mode", "kernel", "--server", f"127.0.0.1:{port}"] + wl)
    time.sleep(0.5)
    m1 = rss(m.pid)
    stop(m)
    m_per = (m1 - m0) / a.keys - payload
    print(f"{a.keys} items, 16 B keys + 64 B values, -m {a.mib}")
    print(f"sluiced:   RSS +{(r1 - r0) / 2**20:.1f} MiB -> {s_per:.1f} bytes per item beyond key and value")
    print(f"memcached: RSS +{(m1 - m0) / 2**20:.1f} MiB -> {m_per:.1f} bytes per item beyond key and value")


if __name__ == "__main__":
    main()
