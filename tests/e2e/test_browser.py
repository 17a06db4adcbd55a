"""End to end in a real browser: the daemon serves its page, Chromium's fake
microphone plays a speech file into it, and what the page shows is compared
with the engine's own transcription of the same file.

Needs Debian's /usr/bin/chromium, the playwright package (never `playwright
install`: the system browser is used), the shared speech data and the shipped
models; skips with the reason otherwise.
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import soundfile
from daemon import Daemon, ProxyThread
from support import missing

from streamrnn.config import ASSETS, load_config
from streamrnn.wer import edit_distance

ROOT = Path(__file__).resolve().parents[2]
SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
MANIFEST = SHARED_DATA / "speech" / "librispeech-mini.jsonl"
CHROMIUM = Path("/usr/bin/chromium")
LEAD_SILENCE_S = 1.0  # lost harmlessly if the fake microphone starts before the page listens
TAIL_SILENCE_S = 1.5  # longer than the endpointer's trailing silence, so a final comes
# The browser captures at its own rate and the page sends that, so the model hears
# slightly different samples than the in-process run: compare characters, not words.
MAX_CER = 0.35
CHROMIUM_ARGS = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream", "--no-sandbox",
                 "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]

# Records, in order, when the page shows a partial and when a final line is added.
RECORD_ORDER = """() => {
  window.seen = [];
  const transcript = document.getElementById("transcript");
  const partial = document.getElementById("partial");
  let finals = 0;
  new MutationObserver(() => {
    const count = transcript.querySelectorAll(".final").length;
    if (count > finals) window.seen.push("final");
    else if (partial.textContent.trim()) window.seen.push("partial");
    finals = count;
  }).observe(transcript, {childList: true, characterData: true, subtree: true});
}"""

FINALS = """() => [...document.querySelectorAll("#transcript .final")].map(
  (line) => ({text: line.textContent, start: Number(line.dataset.start), end: Number(line.dataset.end)}))"""


def require_browser_setup() -> None:
    if not CHROMIUM.exists():
        missing(f"{CHROMIUM} not found (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing("the playwright package is not installed (pip install playwright)")
    if not MANIFEST.exists():
        missing(f"speech data not found at {MANIFEST}")


def require_shipped_models() -> None:
    absent = [name for name in ("am.pt", "lm.pt") if not (ASSETS / name).exists()]
    if absent:
        missing(f"the shipped models are not built yet: no {', '.join(absent)} in {ASSETS}")


def fake_microphone_wav(directory: Path) -> tuple[Path, float]:
    """The first LibriSpeech-mini utterance as 16-bit WAV with silence around it; and its length in s."""
    record = json.loads(MANIFEST.read_text().splitlines()[0])
    samples, rate = soundfile.read(str(MANIFEST.parent / record["audio"]), dtype="float32", always_2d=True)
    speech = samples.mean(axis=1)
    audio = np.concatenate([np.zeros(int(LEAD_SILENCE_S * rate), np.float32), speech,
                            np.zeros(int(TAIL_SILENCE_S * rate), np.float32)])
    path = directory / "speech.wav"
    soundfile.write(str(path), audio, rate, subtype="PCM_16")
    return path, len(audio) / rate


def engine_finals(wav: Path, config_file: Path | None) -> list[dict]:
    """The finals the engine itself makes of the file, streamed in-process."""
    from streamrnn.engine.recognizer import Recognizer
    from streamrnn.engine.transcribe import stream_file
    recognizer = Recognizer(load_config(config_file))
    return [event for event in stream_file(recognizer, wav) if event["type"] == "final"]


def run_in_browser(url: str, wav: Path, speech_s: float, expected_finals: int, screenshot: Path,
                   timeout_s: float = 90, while_listening=None) -> dict:
    """Open the page, press Start, (call `while_listening` with the page,) wait for the finals
    of the file's first pass, press Stop."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True,
            args=CHROMIUM_ARGS + [f"--use-file-for-fake-audio-capture={wav}"])
        try:
            page = browser.new_page(viewport={"width": 900, "height": 760})
            page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
            page.on("console", lambda message: message.type == "error" and problems.append(message.text))
            page.goto(url)
            assert page.title().startswith("streamrnn")
            page.evaluate(RECORD_ORDER)
            started = time.monotonic()
            page.click("#start")
            page.wait_for_function("document.getElementById('status').dataset.state === 'listening'",
                                   timeout=20_000)
            if while_listening:
                while_listening(page)
            # The fake microphone loops the file: wait until its first pass is transcribed, that is
            # as many finals as the engine made of it, or one that ends after the file does.
            try:
                page.wait_for_function(
                    """([speech, count]) => {
                      const ends = [...document.querySelectorAll("#transcript .final")].map((l) => Number(l.dataset.end));
                      return ends.filter((end) => end <= speech).length >= count || ends.some((end) => end > speech);
                    }""", arg=[speech_s, expected_finals], timeout=timeout_s * 1000)
            except PlaywrightTimeout:
                page.screenshot(path=str(screenshot))
                raise AssertionError(f"no final for the file's first pass in {timeout_s} s; status "
                                     f"{page.text_content('#status')!r}, finals {page.evaluate(FINALS)}, "
                                     f"partial {page.text_content('#partial')!r}, {problems}") from None
            first_pass_s = time.monotonic() - started
            page.screenshot(path=str(screenshot))
            result = {
                "finals": page.evaluate(FINALS),
                "seen": page.evaluate("window.seen"),
                "session": page.text_content("#session"),
                "suggestions": page.locator("#suggestions li").count(),
                "first_pass_s": first_pass_s,
            }
            page.click("#stop")
            page.wait_for_function("document.getElementById('status').dataset.state !== 'busy'", timeout=30_000)
            result["status_state"] = page.get_attribute("#status", "data-state")
            result["status"] = page.text_content("#status")
            result["finals_after_stop"] = page.locator("#transcript .final").count()
            page.screenshot(path=str(screenshot.with_name(screenshot.stem + "-stopped.png")))
        finally:
            browser.close()
    result["problems"] = problems
    return result


def cut_mid_speech(proxy: ProxyThread):
    """Once the page shows a partial, drop every connection through the proxy (no close frame,
    as a network failure would) and wait for the page to say it is back."""
    def cut(page):
        page.wait_for_function("window.seen.includes('partial')", timeout=30_000)
        assert proxy.cut_all() >= 1, "the page's WebSocket did not go through the proxy"
        page.wait_for_function("document.getElementById('status').textContent.startsWith('Reconnected')",
                               timeout=20_000)
    return cut


def check_browser_end_to_end(tmp_path: Path, config_file: Path | None = None, drop_connection: bool = False) -> dict:
    wav, duration = fake_microphone_wav(tmp_path)
    expected_events = engine_finals(wav, config_file)
    expected = " ".join(event["text"] for event in expected_events)
    assert expected.split(), "the engine itself heard nothing in the test audio"
    daemon = Daemon(config_file)
    proxy = ProxyThread(daemon.http_port) if drop_connection else None
    try:
        result = run_in_browser((proxy.http if proxy else daemon.http) + "/", wav, duration, len(expected_events),
                                tmp_path / "page.png", while_listening=proxy and cut_mid_speech(proxy))
    except Exception as err:
        raise AssertionError(f"{err}\n--- daemon log ---\n{daemon.log}") from err
    finally:
        if proxy:
            proxy.close()
        code = daemon.stop()
    assert code == 0, f"the daemon exited with {code}:\n{daemon.log}"

    first_pass = [final for final in result["finals"] if final["end"] <= duration]
    heard = " ".join(final["text"] for final in first_pass)
    cer = edit_distance(expected, heard) / len(expected)
    result.update(expected=expected, heard=heard, cer=cer)
    assert cer < MAX_CER, f"browser transcript differs from the engine's (CER {cer:.2f}):\n" \
                          f"engine:  {expected}\nbrowser: {heard}"
    assert "partial" in result["seen"] and "final" in result["seen"], result["seen"]
    assert result["seen"].index("partial") < result["seen"].index("final"), "no partial was shown before the final"
    assert re.fullmatch(r"[0-9a-f]{32}", result["session"]), result["session"]
    assert result["status_state"] == "idle" and result["status"].startswith("Stopped"), result["status"]
    assert result["finals_after_stop"] >= len(result["finals"]), "Stop lost transcript lines"
    assert not result["problems"], result["problems"]
    return result


def test_browser_page_transcribes_the_microphone(tmp_path):
    require_browser_setup()
    require_shipped_models()
    result = check_browser_end_to_end(tmp_path)
    assert result["suggestions"] == 3, "the shipped LM should give next-word suggestions after a final"
    print(f"CER {result['cer']:.3f}, first pass in {result['first_pass_s']:.1f} s, screenshot {tmp_path / 'page.png'}")


def test_browser_page_resumes_its_session_when_the_connection_drops(tmp_path):
    """The connection is cut mid-utterance: the page reconnects, resumes the same session, sends
    the audio the server missed, and the transcript is the engine's, each final once."""
    require_browser_setup()
    require_shipped_models()
    result = check_browser_end_to_end(tmp_path, drop_connection=True)
    ends = [final["end"] for final in result["finals"]]
    assert ends == sorted(set(ends)), f"finals repeated or out of order: {result['finals']}"
    print(f"CER {result['cer']:.3f} with a dropped connection, screenshot {tmp_path / 'page.png'}")
