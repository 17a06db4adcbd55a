"""Seconds from starting `streamrnn serve` (the shipped models, or --config C) to /healthz answering.

    python -m scripts.startup_time [--config config.toml]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
import urllib.request

PORT = 18181


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config")
    args = parser.parse_args()
    command = [sys.executable, "-m", "streamrnn"] + (["--config", args.config] if args.config else [])
    started = time.monotonic()
    daemon = subprocess.Popen(command + ["serve", "--port", str(PORT), "--grpc-port", "0"], stderr=subprocess.DEVNULL)
    try:
        while daemon.poll() is None:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{PORT}/healthz", timeout=1).read()
                print(f"/healthz answered {time.monotonic() - started:.2f} s after the start")
                return
            except OSError:
                time.sleep(0.05)
        sys.exit(f"the daemon exited with code {daemon.returncode} before answering")
    finally:
        daemon.terminate()
        daemon.wait()


if __name__ == "__main__":
    main()
