#!/usr/bin/env python3
"""Stream an audio file to a streamrnn daemon (same as `streamrnn stream`).

    python clients/stream_file.py speech.wav --realtime --url ws://127.0.0.1:8080
    python clients/stream_file.py speech.wav --url wss://host:8080 --ca cert.pem --api-key KEY
"""
import sys

from streamrnn.cli import main

main(["stream", *sys.argv[1:]])
