"""Command-line options: bad values are refused at start with a message that
names the option, and names given to sluiced never reach a shell."""
import os
import subprocess
import uuid

import pytest

from sluice_harness import SLUICED, sh

EAL = ["--no-pci", "--no-huge", "-m", "128", "--lcores", "0@0,1@1", "--log-level", "*:error"]


def run(args, vdevs=("net_null0",), timeout=20):
    cmd = [SLUICED] + EAL + ["--file-prefix", f"slo{uuid.uuid4().hex[:8]}"]
    for v in vdevs:
        cmd += ["--vdev", v]
    try:
        return subprocess.run(cmd + ["--"] + args, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"sluiced started with {args} instead of refusing them")


@pytest.mark.parametrize("opt,value", [
    ("--port", "abc"),
    ("--port", "0x"),
    ("--port", "70000"),
    ("--exception-port", "-1"),
    ("--exception-port", "one"),
    ("--udp-port", "0"),
    ("--udp-port", "11211junk"),
    ("--memory", "12abc"),
    ("--memory", ""),
    ("--memory", "99999999999999999999999"),
    ("--workers", "0"),
    ("--max-item-size", "1k"),
    ("--tcp", "127.0.0.1:notaport"),
    ("--tcp", "nohost:11211"),
    ("--ip", "198.18.9.1/33"),
    ("--ip", "198.18.300.1"),
])
def test_bad_values_are_refused_naming_the_option(opt, value):
    args = ["--ip", "198.18.9.1/24"] if opt != "--ip" else []
    r = run(args + [opt, value])
    assert r.returncode != 0
    assert f"sluiced: {opt}" in r.stderr, r.stderr
    # the message quotes the part that is wrong
    bad = {"127.0.0.1:notaport": "notaport", "nohost:11211": "nohost",
           "198.18.9.1/33": "33"}.get(value, value)
    assert f"'{bad}'" in r.stderr, r.stderr
    assert "sluiced: ready" not in r.stdout


def test_missing_ip_is_named():
    r = run(["--memory", "64"])
    assert r.returncode != 0 and "--ip is required" in r.stderr


@pytest.mark.parametrize("name", ["x;touch {f}", "$(touch {f})", "x touch {f}", "`touch {f}`",
                                  "../../tmp/{f}", "-n", "a" * 80])
def test_namespace_names_never_reach_a_shell(tmp_path, name):
    """--exception-netns used to be pasted into a shell command run as root."""
    victim = tmp_path / "pwned"
    arg = name.format(f=victim)
    tap = f"slq{os.getpid() % 10000}"
    try:
        r = run(["--ip", "198.18.9.1/24", "--tcp", "off", "--exception-port", "1",
                 "--exception-netns", arg],
                vdevs=("net_null0", f"net_tap9,iface={tap}"))
    finally:
        sh("ip", "link", "del", tap, check=False)
    assert r.returncode != 0
    assert "exception-netns" in r.stderr, r.stderr
    assert not victim.exists(), "a shell ran the name as a command"


def test_namespace_that_does_not_exist_is_named():
    tap = f"slr{os.getpid() % 10000}"
    try:
        r = run(["--ip", "198.18.9.1/24", "--tcp", "off", "--exception-port", "1",
                 "--exception-netns", "sluice-no-such-ns"],
                vdevs=("net_null0", f"net_tap9,iface={tap}"))
    finally:
        sh("ip", "link", "del", tap, check=False)
    assert r.returncode != 0
    assert "no namespace sluice-no-such-ns" in r.stderr, r.stderr
