"""A real `streamrnn serve` process on loopback, for end-to-end tests."""
import urllib.request

from streamrnn.tools.daemon_process import READY, Daemon  # noqa: F401


def metric(daemon: Daemon, prefix: str) -> float:
    """The sum of the daemon's /metrics samples whose line starts with `prefix`: a name and a space,
    or a name with its labels."""
    body = urllib.request.urlopen(daemon.http + "/metrics").read().decode()
    return sum(float(line.split()[-1]) for line in body.splitlines() if line.startswith(prefix))
