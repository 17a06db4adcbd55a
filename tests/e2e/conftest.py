"""Fixtures for end-to-end tests: real daemons on loopback."""

import pytest
from support import tiny_daemon_config


@pytest.fixture(scope="session")
def daemon():
    """`streamrnn serve` with the shipped default models."""
    from daemon import Daemon
    server = Daemon()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def strict_daemon(tiny_models, tmp_path_factory):
    """A daemon with tiny models that demands a config first and takes at most 3 sessions."""
    from daemon import Daemon
    server = Daemon(tiny_daemon_config(tiny_models, tmp_path_factory.mktemp("strict"),
                                       "[server]\nrequire_config = true\nmax_sessions = 3\n"))
    yield server
    server.stop()
