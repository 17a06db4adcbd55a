"""A real `streamrnn serve` process on loopback, for end-to-end tests."""
from streamrnn.daemon_process import READY, Daemon  # noqa: F401
