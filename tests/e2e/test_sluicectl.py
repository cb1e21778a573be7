"""sluicectl ring simulate: the keys-moved experiment, as an operator runs it."""
import json
import os
import shutil
import subprocess

import pytest

from sluice_harness import BUILD

SLUICECTL = os.path.join(BUILD, "sluicectl")


def simulate(*args):
    r = subprocess.run([SLUICECTL, "ring", "simulate", *args], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_three_to_four_nodes_moves_a_quarter_with_consistent_hashing():
    out = json.loads(simulate("--nodes", "3", "--add", "1", "--keys", "100000", "--json"))
    st = out["strategies"]
    assert set(st) == {"modulo", "consistent", "rendezvous", "jump", "bounded"}
    assert 0.70 <= st["modulo"]["moved_fraction"] <= 0.80
    assert 0.18 <= st["consistent"]["moved_fraction"] <= 0.32
    assert 0.23 <= st["rendezvous"]["moved_fraction"] <= 0.27
    assert 0.23 <= st["jump"]["moved_fraction"] <= 0.27
    for s in st.values():
        assert s["lookup_ns"] > 0 and s["max_over_mean"] >= 1
        assert s["min"] <= s["mean"] <= s["max"]
    # bounded loads: no node above (1 + 0.25) of the mean
    assert st["bounded"]["max_over_mean"] <= 1.25 + 1e-3


def test_removing_nodes_and_the_terminal_chart():
    out = simulate("--nodes", "5", "--remove", "1", "--keys", "20000")
    assert "5 -> 4 nodes" in out
    for name in ("modulo", "consistent", "rendezvous", "jump", "bounded"):
        assert name in out
    assert "#" in out  # the bars
    js = json.loads(simulate("--nodes", "5", "--remove", "1", "--keys", "20000", "--json"))
    # the removed node's keys, about a fifth, and only those
    assert 0.12 <= js["strategies"]["consistent"]["moved_fraction"] <= 0.28


@pytest.mark.skipif(not shutil.which("gnuplot"), reason="no gnuplot")
def test_png(tmp_path):
    f = tmp_path / "ring.png"
    simulate("--nodes", "3", "--add", "1", "--keys", "10000", "--png", str(f))
    assert f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("args", [[], ["--nodes", "3"], ["--nodes", "3", "--add", "1", "--remove", "1"],
                                  ["--nodes", "x", "--add", "1"], ["--nodes", "3", "--remove", "3"]])
def test_bad_arguments(args):
    r = subprocess.run([SLUICECTL, "ring", "simulate", *args], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr
