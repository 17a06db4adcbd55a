#!/usr/bin/env python3
"""Print another session's live transcript (same as `streamrnn subscribe`).

    python clients/subscribe.py SESSION_ID READ_TOKEN --url ws://127.0.0.1:8080 [--api-key KEY]
"""
import sys

from streamrnn.cli import main

main(["subscribe", *sys.argv[1:]])
