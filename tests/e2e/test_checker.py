"""The consistency checker (checker.py) on a short schedule: one fault of
each kind (kill -9, SIGSTOP for 2 s, a partition, the controller killed
during a failover) under writers and readers through stock clients and
libsluice. No acknowledged write may be lost on a stopped or partitioned
node (fencing), none (writes or increments) beyond the replication lag
measured at the kills, and no read may go back in time.
At length: tests/e2e/checker.py --duration 600."""
import json

import checker


def test_checker_short_schedule(tmp_path):
    out = tmp_path / "checker.json"
    rc = checker.main(["--duration", "14", "--faults", "kill,stop,partition,controller",
                       "--out", str(out)])
    res = json.loads(out.read_text())
    print(json.dumps({k: v for k, v in res.items() if k != "faults"}))
    assert len(res["faults"]) == 4, res["faults"]
    assert rc == 0, res
    assert not res["stale_reads"], res
    # fencing: nothing acknowledged while a node was stopped or cut off
    # is missed; what a kill loses is what was in flight to the backups
    # (the lag sampled every 10 ms, and a write per writer in flight)
    unseen = res["acked_unseen"]
    assert unseen.get("stop", 0) == 0 and unseen.get("partition", 0) == 0, res
    # (increments too: one acknowledged just before a kill may be lost)
    lost_at_kills = sum(unseen.values()) + res["counter_lost"]
    assert lost_at_kills <= res["lag_records_at_kills"] + 4 * 2, res
    assert res["ops"] > 1000, res
