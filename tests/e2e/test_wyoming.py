"""Home Assistant's Wyoming protocol on a real daemon on loopback, spoken to by the `wyoming`
package's own client: describe -> info; transcribe, audio-start/chunk/stop -> the streaming
transcript events and a transcript equal to the WebSocket final text of the same audio."""
import asyncio

import numpy as np
import pytest
from daemon import Daemon, metric, websocket_text
from support import speech_sample
from wyoming.asr import Transcribe, Transcript, TranscriptChunk, TranscriptStart, TranscriptStop
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.info import Describe, Info

from streamrnn_client.audio import encode_chunks, load_for_streaming


@pytest.fixture(scope="module")
def wyoming_daemon(tmp_path_factory):
    """The shipped models, with Wyoming on a free port."""
    config = tmp_path_factory.mktemp("wyoming") / "config.toml"
    config.write_text("[wyoming]\nenabled = true\nport = 0\n")
    server = Daemon(config)
    assert server.wyoming_port
    yield server
    server.stop()


def speech_chunks(index=2):
    samples, rate = load_for_streaming(speech_sample(index=index)[0])
    return encode_chunks(samples, rate, 100, "pcm_s16le"), rate


async def until(client: AsyncTcpClient, *types) -> list:
    """Events read until one of `types` (its type names), or the connection's end, that one included."""
    events = []
    while (event := await asyncio.wait_for(client.read_event(), 60)) is not None:
        events.append(event)
        if event.type in types:
            break
    return events


async def transcribe(port: int, chunks: list[bytes], rate: int, width: int = 2, language: str = "en",
                     times: int = 1) -> list:
    """Home Assistant's exchange, `times` over on one connection: every event the server sent."""
    events = []
    async with AsyncTcpClient("127.0.0.1", port) as client:
        for _ in range(times):
            await client.write_event(Transcribe(language=language).event())
            await client.write_event(AudioStart(rate=rate, width=width, channels=1).event())
            for chunk in chunks:
                await client.write_event(AudioChunk(rate=rate, width=width, channels=1, audio=chunk).event())
            await client.write_event(AudioStop().event())
            events += await until(client, TranscriptStop().event().type, Error(text="").event().type)
    return events


def test_describe_gives_an_asr_program_with_its_model_and_language(wyoming_daemon):
    async def describe():
        async with AsyncTcpClient("127.0.0.1", wyoming_daemon.wyoming_port) as client:
            await client.write_event(Describe().event())
            return Info.from_event(await client.read_event())
    info = asyncio.run(describe())
    program = info.asr[0]
    assert program.installed and program.supports_transcript_streaming
    assert program.models[0].name == "streamrnn" and program.models[0].languages == ["en"]


def test_transcript_equals_the_websocket_final_text(wyoming_daemon):
    chunks, rate = speech_chunks()
    before = metric(wyoming_daemon, 'streamrnn_sessions_total{transport="wyoming"}')
    events = asyncio.run(transcribe(wyoming_daemon.wyoming_port, chunks, rate, times=2))
    assert metric(wyoming_daemon, 'streamrnn_sessions_total{transport="wyoming"}') == before + 2
    expected = websocket_text(wyoming_daemon, chunks, sample_rate=rate)
    assert expected
    half = len(events) // 2
    for exchange in (events[:half], events[half:]):  # two sessions one after another, the same text
        kinds = [e.type for e in exchange]
        assert kinds[0] == "transcript-start" and kinds[-2:] == ["transcript", "transcript-stop"], kinds
        assert TranscriptStart.from_event(exchange[0]).language == "en"
        chunks_text = "".join(TranscriptChunk.from_event(e).text for e in exchange if e.type == "transcript-chunk")
        assert Transcript.from_event(exchange[-2]).text == chunks_text == expected
        assert TranscriptStop.is_type(exchange[-1].type)


def noise(seconds=1.0):
    samples = (np.random.default_rng(0).standard_normal(int(16000 * seconds)) * 3000).astype("<i2")
    return [samples[i:i + 1600].tobytes() for i in range(0, len(samples), 1600)]


async def send_all(client: AsyncTcpClient, scenario: dict) -> None:
    rate, width = scenario.get("rate", 16000), scenario.get("width", 2)
    await client.write_event(Transcribe(language=scenario.get("language", "en")).event())
    if scenario.get("chunk_first"):
        await client.write_event(AudioChunk(rate=rate, width=width, channels=1, audio=noise()[0]).event())
    await client.write_event(AudioStart(rate=rate, width=width, channels=1).event())
    audio = [noise()[0], b"\x00\x01\x02"] if scenario.get("odd_bytes") else noise()
    for chunk in audio:
        await client.write_event(AudioChunk(rate=rate, width=width, channels=1, audio=chunk).event())
    await client.write_event(AudioStop().event())


@pytest.mark.parametrize("scenario, code, words", [
    ({"width": 4}, "bad_config", "16-bit (width 2)"),
    ({"language": "fr"}, "bad_config", "English"),
    ({"rate": 12345}, "bad_config", "unsupported sample rate 12345"),
    ({"chunk_first": True}, "bad_message", "audio-chunk before audio-start"),
    ({"odd_bytes": True}, "bad_audio", "even number of bytes"),
])
def test_bad_events_get_an_error_event_and_disturb_nobody(wyoming_daemon, scenario, code, words):
    async def bad_client():
        """The bad request, then a good one on the same connection."""
        async with AsyncTcpClient("127.0.0.1", wyoming_daemon.wyoming_port) as client:
            await send_all(client, scenario)
            events = await until(client, "error")
            await send_all(client, {})
            return events, await until(client, "transcript-stop")

    async def both():
        other = asyncio.create_task(transcribe(wyoming_daemon.wyoming_port, noise(2.0), 16000))
        return await bad_client(), await other
    (events, after), others = asyncio.run(both())
    errors = [Error.from_event(e) for e in events if Error.is_type(e.type)]
    assert len(errors) == 1 and errors[0].code == code and words in errors[0].text, events
    assert [e.type for e in after][-2:] == ["transcript", "transcript-stop"]  # the connection went on
    assert [e.type for e in others][-2:] == ["transcript", "transcript-stop"]
    assert wyoming_daemon.alive
