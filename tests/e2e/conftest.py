import os

import pytest

from sluice_harness import Node, start_memcached


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
    p, port = start_memcached()
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
