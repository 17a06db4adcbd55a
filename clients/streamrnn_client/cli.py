"""The `streamrnn-client` command (also `streamrnn stream|mic|subscribe`): stream a file or the
microphone to a running daemon, or follow another session's live transcript."""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys

from websockets.exceptions import ConnectionClosed, InvalidMessage, InvalidStatus, InvalidURI

from streamrnn_client import __version__
from streamrnn_client.audio import file_chunks, paced
from streamrnn_client.protocol import ErrorCode, EventType, StreamrnnError
from streamrnn_client.tls import client_context
from streamrnn_client.websocket import ServerError, stream_audio, subscribe

RESUME_FAILURES = (ErrorCode.UNKNOWN_SESSION, ErrorCode.RESUME_EXPIRED, ErrorCode.SESSION_ENDED,
                   ErrorCode.SHUTTING_DOWN)
PROG = "streamrnn-client"


class Printer:
    """Partials rewritten in place on a terminal; finals as lines; or JSON lines."""

    def __init__(self, as_json: bool, prog: str = PROG):
        self.as_json, self.prog = as_json, prog
        self.live = sys.stdout.isatty() and not as_json

    def __call__(self, event: dict) -> None:
        if self.as_json:
            print(json.dumps(event), flush=True)
        elif event["type"] == EventType.SESSION:
            print(f"# session {event['session_id']}; follow it with: {self.prog} subscribe {event['session_id']} "
                  f"{event['read_token']}", file=sys.stderr, flush=True)
        elif event["type"] == EventType.RESUMED:
            print(f"\n# connection dropped; resumed session {event['session_id']}", file=sys.stderr, flush=True)
        elif event["type"] == EventType.PARTIAL and self.live:
            print(f"\r\033[K{event['text']}", end="", flush=True)
        elif event["type"] == EventType.FINAL:
            print(("\r\033[K" if self.live else "") + event["text"], flush=True)
        elif event["type"] == EventType.SUGGESTIONS and self.live:
            print("  next: " + ", ".join(w["word"].lower() for w in event["words"]), file=sys.stderr, flush=True)


async def stream_file_command(args) -> None:
    printer = Printer(args.json, args.prog)
    chunks, rate = file_chunks(args.audio, args.chunk_ms)
    source = paced(chunks, args.chunk_ms / 1000) if args.realtime else chunks
    async for event in stream_audio(args.url, source, sample_rate=rate, phrases=args.phrase, **connection(args)):
        printer(event)


async def subscribe_command(args) -> None:
    printer = Printer(args.json, args.prog)
    async for event in subscribe(args.url, args.session_id, args.read_token, **connection(args)):
        printer(event)


def connection(args) -> dict:
    """The key and, for wss:// URLs, the TLS settings the client functions take."""
    secure = args.url.startswith("wss://")
    if (args.ca or args.insecure) and not secure:
        raise SystemExit(f"{args.prog}: --ca and --insecure are for wss:// URLs")
    return {"api_key": args.api_key, "ssl": client_context(args.ca, args.insecure) if secure else None}


def import_sounddevice(prog: str):
    try:
        import sounddevice
    except OSError as err:  # the module imports but finds no PortAudio library
        raise SystemExit(f"{prog}: the microphone needs PortAudio: install it "
                         "(Debian/Ubuntu: apt-get install libportaudio2; macOS: brew install portaudio)") from err
    return sounddevice


async def microphone_chunks(sounddevice, device, rate: int, chunk_ms: int):
    """Yield pcm_s16le chunks from the microphone."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()

    def callback(data, frames, time, status):
        loop.call_soon_threadsafe(queue.put_nowait, bytes(data))

    with sounddevice.RawInputStream(samplerate=rate, blocksize=rate * chunk_ms // 1000, device=device,
                                    channels=1, dtype="int16", callback=callback):
        while True:
            yield await queue.get()


async def mic_command(args) -> None:
    sounddevice = import_sounddevice(args.prog)
    if args.list_devices:
        print(sounddevice.query_devices())
        return
    info = sounddevice.query_devices(args.device, "input")
    rate = args.rate or int(info["default_samplerate"])
    print(f"# listening on {info['name']} at {rate} Hz; Ctrl-C to stop", file=sys.stderr)
    printer, delay = Printer(args.json, args.prog), 1.0
    while True:
        try:
            async for event in stream_audio(args.url, microphone_chunks(sounddevice, args.device, rate, 100),
                                            sample_rate=rate, phrases=args.phrase, **connection(args)):
                printer(event)
                delay = 1.0
            return
        except ServerError as err:
            if err.code not in RESUME_FAILURES:
                raise
            print(f"# the session could not be resumed ({err}); starting a new one", file=sys.stderr)
        except (ConnectionClosed, OSError) as err:
            print(f"# connection lost ({err}); starting a new session in {delay:.0f} s", file=sys.stderr)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)


def add_connection_arguments(parser) -> None:
    parser.add_argument("--url", default="ws://127.0.0.1:8080", help="daemon address (ws:// or wss://)")
    parser.add_argument("--api-key", default=os.environ.get("STREAMRNN_API_KEY"),
                        help="API key, when the daemon needs one (default: $STREAMRNN_API_KEY)")
    parser.add_argument("--ca", help="PEM file of the certificate (or CA) to trust for wss:// "
                                     "(e.g. the daemon's self-signed certificate)")
    parser.add_argument("--insecure", action="store_true", help="wss:// without checking the certificate")


def add_arguments(commands, prog: str = "streamrnn") -> None:
    """The `stream`, `mic` and `subscribe` subcommands, under the command `prog` (for messages)."""
    stream = commands.add_parser("stream", help="stream an audio file to a running daemon")
    stream.add_argument("audio")
    add_connection_arguments(stream)
    stream.add_argument("--realtime", action="store_true", help="pace the audio as if it were live")
    stream.add_argument("--chunk-ms", type=int, default=100)
    stream.add_argument("--phrase", action="append", default=[])
    stream.add_argument("--json", action="store_true")
    mic = commands.add_parser("mic", help="stream the microphone to a running daemon")
    add_connection_arguments(mic)
    mic.add_argument("--device", help="input device number or name (see --list-devices)")
    mic.add_argument("--list-devices", action="store_true")
    mic.add_argument("--rate", type=int, default=0, help="sample rate (default: the device's)")
    mic.add_argument("--phrase", action="append", default=[])
    mic.add_argument("--json", action="store_true")
    follow = commands.add_parser("subscribe", help="print a live session's transcript")
    follow.add_argument("session_id")
    follow.add_argument("read_token", help="the session's read token (its client was given it)")
    add_connection_arguments(follow)
    follow.add_argument("--json", action="store_true")
    for parser in (stream, mic, follow):
        parser.set_defaults(prog=prog)


COMMANDS = {"stream": stream_file_command, "mic": mic_command, "subscribe": subscribe_command}


def run(args) -> None:
    """Run a parsed `stream`, `mic` or `subscribe` command; what goes wrong is one line on stderr
    (exit status 1; 2 for a file or certificate that cannot be used)."""
    prog, url = getattr(args, "prog", PROG), args.url
    try:
        asyncio.run(COMMANDS[args.command](args))
    except ServerError as err:
        raise SystemExit(f"{prog}: server error {err}") from err
    except StreamrnnError as err:  # the audio file, the CA file
        print(f"{prog}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from err
    except InvalidStatus as err:
        status = err.response.status_code
        hint = " (it needs an API key: --api-key or $STREAMRNN_API_KEY)" if status == 401 else ""
        raise SystemExit(f"{prog}: {url} refused the connection with HTTP {status}{hint}") from err
    except InvalidMessage as err:
        raise SystemExit(f"{prog}: {url} is not a streamrnn WebSocket server: no WebSocket handshake "
                         f"({err.__cause__ or err}); --url takes the daemon's HTTP port (server.http_port, "
                         "8080 by default), not its gRPC port") from err
    except ConnectionClosed as err:
        raise SystemExit(f"{prog}: lost the connection to {url}: {err}") from err
    except (OSError, InvalidURI) as err:
        raise SystemExit(f"{prog}: cannot reach {url}: {err}") from err


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Stream audio to a streamrnn daemon and print "
                                     "the live transcript: a file, the microphone, or another session.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    add_arguments(parser.add_subparsers(dest="command", required=True), PROG)
    return parser


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main(sys.argv[1:])
