"""Replication through a lossy link between the nodes (a -Dfaults=true
build: cluster-port datagrams dropped, duplicated and held back to arrive
out of order, 5% each): the streams retransmit and skip what they applied
already, and once their lag is 0 every acknowledged write and delete is on
the backups, so a kill -9 of the primary loses none of them."""
import os
import signal

import pytest

from sluice_harness import faults_built
from test_replication import Cluster, caught_up, client, cstats, owned_by, streams, wait_for


@pytest.mark.skipif(not faults_built(), reason="sluiced built without -Dfaults=true")
def test_lost_duplicated_and_reordered_replication_datagrams_lose_nothing(tmp_path):
    c = Cluster(str(tmp_path / "faulty"))
    try:
        os.environ["SLUICE_FAULTS"] = "cport_drop=0.05,cport_dup=0.05,cport_delay=0.05"
        try:
            c.up(3, 1, 64, 1)
        finally:
            del os.environ["SLUICE_FAULTS"]
        nodes = c.state["nodes"]
        keys = {f"f{i}": f"v{i}-" + "x" * (i % 3000) for i in range(3000)}
        mine = owned_by(c, 2, list(keys))
        # straight to the owner (forwarded requests would meet the faults too)
        cl = client(nodes[2])
        for i in range(0, len(mine), 50):
            cl.set_many({k: keys[k] for k in mine[i:i + 50]}, noreply=False)
        for k in mine[:200]:
            cl.delete(k, noreply=False)
        wait_for(lambda: caught_up(nodes), timeout=30)
        out = {k: f for k, (_, f) in streams(nodes[2]).items() if k.startswith("out.")}
        assert sum(f["retransmits"] for f in out.values()) > 0, out
        os.kill(nodes[2]["pid"], signal.SIGKILL)
        wait_for(lambda: cstats(nodes[0])["slots_owned"] + cstats(nodes[1])["slots_owned"] ==
                 16384, timeout=10)
        got = {}
        for idx in (0, 1):
            theirs = owned_by(c, idx, mine)
            owner = client(nodes[idx])
            for i in range(0, len(theirs), 100):
                got.update(owner.get_many(theirs[i:i + 100]))
        want = {k: keys[k].encode() for k in mine[200:]}
        assert got == want, (len(got), len(want))
    finally:
        c.down()
