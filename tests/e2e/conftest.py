import os
import subprocess

import pytest

from sluice_harness import Node


def pytest_configure(config):
    if os.geteuid() != 0:
        pytest.exit("the end-to-end tests need root (network namespaces, taps)", returncode=2)


@pytest.fixture(scope="session")
def node():
    n = Node(idx=1, workers=2, memory=64)
    try:
        n.start()
        yield n
    finally:
        rc = n.stop()
        assert rc == 0, "sluiced did not exit cleanly (rc=%r)" % rc


@pytest.fixture(scope="session")
def memcached():
    """Stock memcached (Debian package) on loopback: the reference."""
    port = 40000 + os.getpid() % 10000
    p = subprocess.Popen(["memcached", "-u", "nobody", "-l", "127.0.0.1", "-p", str(port),
                          "-U", str(port), "-m", "64", "-t", "1"])
    import socket
    import time
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    yield ("127.0.0.1", port)
    p.terminate()
    p.wait()


@pytest.fixture()
def clean(node):
    """Each test starts with an empty cache."""
    s = node.tcp_local()
    s.sendall(b"flush_all\r\n")
    assert s.recv(10) == b"OK\r\n"
    s.close()
    return node
