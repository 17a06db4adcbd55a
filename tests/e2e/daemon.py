"""A real `streamrnn serve` process on loopback for end-to-end tests, and a proxy that cuts its connections."""
import asyncio
import threading
import urllib.request

from streamrnn.tools.daemon_process import READY, Daemon  # noqa: F401
from streamrnn.tools.soak import ChaosProxy
from streamrnn_client.websocket import stream_audio


def metric(daemon: Daemon, prefix: str) -> float:
    """The sum of the daemon's /metrics samples whose line starts with `prefix`: a name and a space,
    or a name with its labels."""
    body = urllib.request.urlopen(daemon.http + "/metrics").read().decode()
    return sum(float(line.split()[-1]) for line in body.splitlines() if line.startswith(prefix))


def websocket_text(daemon: Daemon, chunks: list[bytes], **options) -> str:
    """The final text of audio streamed to /v1/recognize (`options`: the session's), finals joined
    by spaces: what the other protocols' transcripts of the same audio must equal."""
    async def finals():
        return [e["text"] async for e in stream_audio(daemon.url, chunks, suggestions=0, **options)
                if e["type"] == "final"]
    return " ".join(text for text in asyncio.run(finals()) if text)


class ProxyThread:
    """A ChaosProxy in front of the daemon's HTTP port, run by its own event loop in a thread."""

    def __init__(self, port: int):
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.proxy = ChaosProxy("127.0.0.1", port)
        self.http = self.call(self.proxy.start()).replace("ws://", "http://")
        self.address = self.http.removeprefix("http://")  # host:port, for gRPC

    def call(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=30)

    def cut_all(self) -> int:
        async def cut():
            return self.proxy.cut_all()
        return self.call(cut())

    def close(self) -> None:
        self.call(self.proxy.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
