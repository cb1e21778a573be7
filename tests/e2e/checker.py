#!/usr/bin/python3
"""Consistency checker: writes and reads a Sluice cluster through stock
clients (pymemcache over TCP, any node) and libsluice (UDP, straight to the
owners) while faults are injected, remembers every acknowledged write, and
reports what a user would call a lost or stale answer.

    tests/e2e/checker.py [--nodes 3] [--duration 30] [--faults kill,stop,partition,controller]
                         [--keys 200] [--out FILE]

It brings up its own cluster (scripts/cluster.py). Writers set each key to
ever larger values "WRITER:N" and increment counters; a write counts as
acknowledged when its client got STORED (or the counter's new value). The
faults, one after another, on a node picked in turn:

  kill        kill -9, restarted a second later (it rejoins as a backup)
  stop        SIGSTOP for 2 s, then SIGCONT (a gray failure: its lease runs
              out, its slots fail over, and it must take no write after)
  partition   its tap off the bridge for 2 s (cut off from the other nodes
              and the clients, not from the controller)
  controller  kill -9 a node and, 50 ms later, the controller; the
              controller restarted 1 s later, the node 2 s later

At the end (every fault healed, replication caught up) each key is read
from the cluster and compared with the last value acknowledged for it:

  lost            acknowledged writes whose value is gone at the end (an
                  older one, or none, is read); counted per fault under way
                  when they were acknowledged ("none": before any)
  acked_unseen    acknowledged writes a later read did not see (lost for
                  good, or overwritten since), counted the same way; beside
                  them the replication lag (records) each victim reported
                  last before it was killed (sampled every 10 ms), which
                  bounds what a kill may lose
  stale_reads     a read that returned a value older than one the same key
                  had returned before (a read going back in time)
  counter_lost    increments acknowledged and missing from a counter

The JSON has all of them; the exit status is 0 when nothing was lost
beyond the measured lag at the kills and nothing at all on stop and
partition (fencing), else 1.
"""
import argparse
import ctypes
import json
import os
import random
import signal
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from cluster import BUILD, Cluster, InNetns, sh, tcp_ask  # noqa: E402
from pymemcache.client.base import Client  # noqa: E402


class Lib:
    """libsluice through ctypes, its socket made in the client netns."""

    def __init__(self, ns, seeds):
        self.l = ctypes.CDLL(os.path.join(BUILD, "libsluice.so"))
        self.l.sluice_open.restype = ctypes.c_void_p
        self.l.sluice_open.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
        self.l.sluice_set.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t,
                                      ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint32,
                                      ctypes.c_int32]
        with InNetns(ns):
            self.c = self.l.sluice_open(seeds.encode(), None)
        if not self.c:
            raise RuntimeError("libsluice: no seed answered")

    def set(self, k, v):
        return self.l.sluice_set(self.c, k.encode(), len(k), v.encode(), len(v), 0, 0) == 0


def lag_records(node):
    try:
        out = tcp_ask(node["local_tcp"], b"stats replication\r\n", timeout=0.3).decode()
    except OSError:
        return None
    n = 0
    for l in out.splitlines():
        if l.startswith("STAT out."):
            for kv in l.split()[3:]:
                if kv.startswith("lag_records="):
                    n += int(kv.split("=")[1])
    return n


class Checker:
    def __init__(self, c, keys):
        self.c = c
        self.keys = [f"ck{i}" for i in range(keys)]
        self.counters = [f"cnt{i}" for i in range(8)]
        self.lock = threading.Lock()
        self.acked = {}        # key -> highest N acknowledged
        self.acked_at = {}     # key -> (time, fault window or None)
        self.read_max = {}     # key -> highest N read
        self.stale = {}        # "fault@node read through" -> reads back in time
        self.unseen = {}       # fault at the ack -> acked writes a later read missed
        self.unseen_seen = set()
        self.incr_acked = {k: 0 for k in self.counters}
        self.ops = self.errors = 0
        self.stop = False
        self.window = None     # the fault under way (kind), for attribution
        self.lags = {}         # node name -> last lag_records seen

    def clients(self):
        return [Client(n["local_tcp"], connect_timeout=1, timeout=1)
                for n in self.c.state["nodes"]]

    def writer(self, wid, use_lib):
        rnd = random.Random(wid)
        seq = 0
        lib = None
        if use_lib:
            seeds = ",".join(f"{n['ip']}:11211" for n in self.c.state["nodes"])
            lib = Lib(self.c.state["client_netns"], seeds)
        cls = self.clients()
        while not self.stop:
            k = rnd.choice(self.keys[wid::4])  # each writer its own keys
            seq += 1
            v = f"{wid}:{seq}"
            ok = False
            try:
                if lib:
                    ok = lib.set(k, v)
                else:
                    ok = rnd.choice(cls).set(k, v, noreply=False)
            except Exception:
                cls = self.clients()
            with self.lock:
                self.ops += 1
                if ok:
                    self.acked[k] = seq
                    self.acked_at[k] = (time.time(), self.window)
                else:
                    self.errors += 1
            if rnd.random() < 0.1:
                ck = rnd.choice(self.counters)
                try:
                    if rnd.choice(cls).incr(ck, 1) is not None:
                        with self.lock:
                            self.incr_acked[ck] += 1
                except Exception:
                    cls = self.clients()

    def reader(self):
        rnd = random.Random(99)
        cls = self.clients()
        while not self.stop:
            ks = rnd.sample(self.keys, 20)
            via = rnd.randrange(len(cls))
            with self.lock:
                before = {k: self.acked.get(k, 0) for k in ks}
                win = self.window or "none"
            try:
                got = cls[via].get_many(ks)
            except Exception:
                cls = self.clients()
                continue
            with self.lock:
                for k in ks:
                    n = int(got[k].split(b":")[1]) if k in got else 0
                    if n < self.read_max.get(k, 0):
                        w = f"{win}@n{via + 1}"
                        self.stale[w] = self.stale.get(w, 0) + 1
                    if n < before[k] and (k, before[k]) not in self.unseen_seen:
                        # an acknowledged write this read did not see
                        # (counted once per write, however many reads)
                        self.unseen_seen.add((k, before[k]))
                        why = self.acked_at[k][1] or "none"
                        self.unseen[why] = self.unseen.get(why, 0) + 1
                    self.read_max[k] = max(n, self.read_max.get(k, 0))

    def watch_lag(self):
        while not self.stop:
            for n in self.c.state["nodes"]:
                lag = lag_records(n)
                if lag is not None:
                    self.lags[n["name"]] = lag
            time.sleep(0.01)


def run_fault(chk, c, kind, i, log):
    nodes = c.state["nodes"]
    v = nodes[i % len(nodes)]
    chk.window = kind
    t0 = time.time()
    entry = {"fault": kind, "node": v["name"], "at": t0}
    if kind == "kill":
        entry["lag_records"] = chk.lags.get(v["name"], 0)
        os.kill(v["pid"], signal.SIGKILL)
        time.sleep(1.0)
        c.restart(v["name"], wait=False)
    elif kind == "stop":
        os.kill(v["pid"], signal.SIGSTOP)
        time.sleep(2.0)
        os.kill(v["pid"], signal.SIGCONT)
    elif kind == "partition":
        ns = c.state["client_netns"]
        sh("ip", "-n", ns, "link", "set", v["tap"], "nomaster")
        time.sleep(2.0)
        sh("ip", "-n", ns, "link", "set", v["tap"], "master", "slbr")
    elif kind == "controller":
        entry["lag_records"] = chk.lags.get(v["name"], 0)
        os.kill(v["pid"], signal.SIGKILL)
        time.sleep(0.05)
        ctl = c.state["controllers"][0]
        os.kill(ctl["pid"], signal.SIGKILL)
        time.sleep(1.0)
        port = int(ctl["addr"].rsplit(":", 1)[1])
        c.state["controllers"][0] = c.start_controller(0, port)
        c.save()
        time.sleep(1.0)
        c.restart(v["name"], wait=False)
    c.wait_converged(timeout=60)
    chk.window = None
    entry["healed_s"] = round(time.time() - t0, 2)
    log.append(entry)
    print(f"  {kind} {v['name']}: healed in {entry['healed_s']} s", flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--duration", type=float, default=30)
    ap.add_argument("--faults", default="kill,stop,partition,controller")
    ap.add_argument("--keys", type=int, default=200)
    ap.add_argument("--out", default="/tmp/sluice-checker.json")
    a = ap.parse_args(argv)
    c = Cluster(os.path.join(tempfile.mkdtemp(prefix="sluice-chk-"), "cl"))
    kinds = [k for k in a.faults.split(",") if k]
    res = {}
    try:
        c.up(a.nodes, 1, 64, 1)
        chk = Checker(c, a.keys)
        c0 = Client(c.state["nodes"][0]["local_tcp"], timeout=5)
        for k in chk.counters:
            c0.set(k, "0", noreply=False)
        threads = [threading.Thread(target=chk.writer, args=(w, w == 3), daemon=True)
                   for w in range(4)]
        threads += [threading.Thread(target=chk.reader, daemon=True),
                    threading.Thread(target=chk.watch_lag, daemon=True)]
        for t in threads:
            t.start()
        log = []
        t_end = time.time() + a.duration
        i = 0
        while kinds and time.time() < t_end:
            time.sleep(1.0)
            run_fault(chk, c, kinds[i % len(kinds)], i, log)
            i += 1
        while time.time() < t_end:
            time.sleep(0.2)
        chk.stop = True
        for t in threads:
            t.join(timeout=10)
        c.wait_converged(timeout=60)
        # every acknowledged write, read back
        cl = Client(c.state["nodes"][0]["local_tcp"], timeout=5)
        lost = {}
        keys = list(chk.acked)
        for j in range(0, len(keys), 50):
            got = cl.get_many(keys[j:j + 50])
            for k in keys[j:j + 50]:
                n = int(got[k].split(b":")[1]) if k in got else 0
                if n < chk.acked[k]:
                    why = chk.acked_at[k][1] or "none"
                    lost[why] = lost.get(why, 0) + 1
        counter_lost = 0
        for k, n in chk.incr_acked.items():
            v = cl.get(k)
            have = int(v) if v else 0
            counter_lost += max(0, n - have) if n else 0
        kill_lag = sum(e.get("lag_records", 0) for e in log)
        res = {"ops": chk.ops, "errors": chk.errors, "writes_acked_keys": len(chk.acked),
               "lost": lost, "acked_unseen": chk.unseen, "stale_reads": chk.stale,
               "counter_lost": counter_lost,
               "lag_records_at_kills": kill_lag, "faults": log}
        fenced_lost = lost.get("stop", 0) + lost.get("partition", 0)
        kill_lost = lost.get("kill", 0) + lost.get("controller", 0) + lost.get("none", 0)
        res["ok"] = fenced_lost == 0 and kill_lost <= kill_lag
    finally:
        c.down()
    json.dump(res, open(a.out, "w"), indent=1)
    print(json.dumps({k: v for k, v in res.items() if k != "faults"}))
    return 0 if res.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
