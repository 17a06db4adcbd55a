"""A real `streamrnn serve` process on loopback (end-to-end tests, `streamrnn bench`)."""
from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

READY = re.compile(r"ready: http and websocket on (https?)://([\d.]+):(\d+), grpc on [\d.]+:(\d+)"
                   r"(?:, wyoming on [\d.]+:(\d+))?")


class Daemon:
    def __init__(self, config: Path | None = None, timeout: float = 120.0, serve_args: tuple = ()):
        command = [sys.executable, "-m", "streamrnn"] + (["--config", str(config)] if config else [])
        command += ["serve", "--port", "0", "--grpc-port", "0", *serve_args]
        self.process = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        self.lines: list[str] = []
        self.ports: tuple[int, int] | None = None
        self.wyoming_port: int | None = None  # when [wyoming] is enabled
        self.scheme = "http"
        self.ready = threading.Event()
        threading.Thread(target=self.read_log, daemon=True).start()
        if not self.ready.wait(timeout) or self.ports is None:
            self.stop()
            raise RuntimeError("daemon did not get ready:\n" + self.log)
        self.http_port, self.grpc_port = self.ports
        secure = "s" if self.scheme == "https" else ""
        self.url = f"ws{secure}://127.0.0.1:{self.http_port}"
        self.http = f"{self.scheme}://127.0.0.1:{self.http_port}"
        self.grpc = f"127.0.0.1:{self.grpc_port}"

    def read_log(self) -> None:
        """Keep reading stderr (a full pipe would block the daemon); note the ready line."""
        for line in self.process.stderr:
            self.lines.append(line)
            match = READY.search(line)
            if match:
                self.scheme = match.group(1)
                self.ports = int(match.group(3)), int(match.group(4))
                self.wyoming_port = int(match.group(5)) if match.group(5) else None
                self.ready.set()
        self.ready.set()

    @property
    def log(self) -> str:
        return "".join(self.lines)

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.alive:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()
