#!/usr/bin/env python3
"""Live captions from the microphone through a streamrnn daemon (same as `streamrnn mic`).

    python clients/mic.py --list-devices
    python clients/mic.py --device 2 --url ws://127.0.0.1:8080
"""
import sys

from streamrnn.cli import main

main(["mic", *sys.argv[1:]])
