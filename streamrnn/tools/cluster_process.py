"""Real redis-server and nginx processes on loopback, in a folder of their own, for `streamrnn
chaos` and the end-to-end tests of replicas behind a load balancer."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis

from streamrnn_client.protocol import NO_REPLICA

START_TIMEOUT_S = 20.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with status {process.returncode} before listening on port {port}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on port {port} within {START_TIMEOUT_S:g} s")


PACKAGES = {"redis-server": "redis-server", "nginx": "nginx"}


def require(program: str) -> str:
    """The path of a Debian program (also where /usr/sbin is not on PATH)."""
    path = shutil.which(program, path=os.environ.get("PATH", "") + ":/usr/sbin")
    if path is None:
        raise RuntimeError(f"{program} is not installed (Debian: apt-get install {PACKAGES[program]})")
    return path


class Process:
    """A child process that can be killed (SIGKILL) and started again on the same port."""
    process: subprocess.Popen | None = None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        if self.alive:
            self.process.kill()
        if self.process is not None:
            self.process.wait()

    def stop(self, timeout: float = 10.0) -> None:
        if self.alive:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()


class RedisServer(Process):
    """redis-server without persistence: what it holds lives as long as the process."""

    def __init__(self, folder: Path, port: int | None = None):
        self.folder, self.port = Path(folder), port or free_port()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.start()

    def start(self) -> None:
        command = [require("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                   "--appendonly", "no", "--dir", str(self.folder), "--logfile", str(self.folder / "redis.log")]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port, self.process, "redis-server")

    def info(self, section: str = "memory") -> dict:
        """`INFO section` as a dict (used_memory, ...)."""
        with redis.Redis(port=self.port, socket_timeout=10) as client:
            return client.info(section)


def nginx_config(http_upstreams: list[str], grpc_upstreams: list[str], http_listen: str, grpc_listen: str,
                 prefix: str = "", workers: str = "1") -> str:
    """An nginx.conf that balances WebSocket/HTTP and gRPC over the replicas (host:port lists).
    `prefix`: a folder for nginx's pid, logs and temporary files (a process run by a user, on
    loopback); "" for a system nginx. `workers`: nginx worker processes ("auto": one per core). Open-source nginx checks replicas passively: one that refuses
    or drops a request is skipped for `fail_timeout`, and the request goes to the next one."""
    paths = "" if not prefix else (
        f"pid {prefix}/nginx.pid;\nerror_log {prefix}/error.log warn;\n")
    temp = "" if not prefix else "".join(
        f"    {kind}_temp_path {prefix}/{kind};\n" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    access = f"    access_log {prefix}/access.log;\n" if prefix else ""
    http_servers = "".join(f"        server {u} max_fails=1 fail_timeout=2s;\n" for u in http_upstreams)
    grpc_servers = "".join(f"        server {u} max_fails=1 fail_timeout=2s;\n" for u in grpc_upstreams)
    return NGINX_TEMPLATE.format(paths=paths, temp=temp, access=access, http_servers=http_servers,
                                 grpc_servers=grpc_servers, http_listen=http_listen, grpc_listen=grpc_listen,
                                 workers=workers, no_replica=NO_REPLICA.replace(" ", "%20"))


NGINX_TEMPLATE = """\
# streamrnn replicas behind nginx: WebSocket and HTTP on one port, gRPC (HTTP/2) on another.
worker_processes {workers};
{paths}events {{
    worker_connections 4096;
}}
http {{
{temp}{access}    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ""      close;
    }}
    upstream streamrnn_http {{
{http_servers}    }}
    upstream streamrnn_grpc {{
{grpc_servers}    }}
    server {{
        listen {http_listen};
        location / {{
            proxy_pass http://streamrnn_http;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_read_timeout 3600s;
            proxy_send_timeout 3600s;
            proxy_buffering off;
            # a replica that refuses the connection (dead, restarting) is skipped
            proxy_next_upstream error timeout http_502 http_503;
            proxy_connect_timeout 2s;
        }}
    }}
    server {{
        listen {grpc_listen} http2;
        location / {{
            grpc_pass grpc://streamrnn_grpc;
            grpc_read_timeout 3600s;
            grpc_send_timeout 3600s;
            grpc_next_upstream error timeout http_502 http_503;
            grpc_connect_timeout 2s;
            client_max_body_size 0;
            error_page 502 503 504 = @no_replica;
        }}
        # gRPC's own answer when no replica can take the call (all dead or restarting, for a
        # moment): UNAVAILABLE with this message, which streamrnn's clients try again after
        location @no_replica {{
            default_type application/grpc;
            add_header grpc-status 14 always;
            add_header grpc-message "{no_replica}" always;
            return 204;
        }}
    }}
}}
"""


class Nginx(Process):
    """nginx in the foreground with its own config, pid, logs and temporary files in `folder`."""

    def __init__(self, folder: Path, http_upstreams: list[str], grpc_upstreams: list[str]):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.http_port, self.grpc_port = free_port(), free_port()
        self.config = self.folder / "nginx.conf"
        self.config.write_text(nginx_config(http_upstreams, grpc_upstreams, f"127.0.0.1:{self.http_port}",
                                            f"127.0.0.1:{self.grpc_port}", str(self.folder)))
        self.url, self.http = f"ws://127.0.0.1:{self.http_port}", f"http://127.0.0.1:{self.http_port}"
        self.grpc = f"127.0.0.1:{self.grpc_port}"
        command = [require("nginx"), "-p", str(self.folder), "-c", str(self.config), "-g", "daemon off;"]
        with open(self.folder / "stderr.log", "ab") as stderr:
            self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
        for port in (self.http_port, self.grpc_port):
            wait_for_port(port, self.process, f"nginx (see {self.folder}/error.log)")
