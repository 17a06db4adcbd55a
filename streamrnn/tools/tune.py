"""`streamrnn tune`: the lexicon search's n-gram weight, word score and beam, picked on
held-out speech. The acoustic model runs once per recording; each setting then decodes the same
log-probs with the same per-session decoder the daemon uses (endpoints included), so its WER is
what `streamrnn eval` would report with that setting.

Settings are picked on the even-numbered utterances of each manifest's split; the odd-numbered
half, which played no part in the choice, says how well the pick holds on speech it was not
tuned on."""
from __future__ import annotations

import dataclasses
import itertools
import json
import sys
import time

import numpy as np

from streamrnn.audio import SAMPLE_RATE, load_16k
from streamrnn.config import Config, load_config, validate
from streamrnn.engine.recognizer import Recognizer
from streamrnn.manifest import load_manifest
from streamrnn.tools.evaluate import spread
from streamrnn.tools.report import markdown_table, percent
from streamrnn.wer import ErrorRate
from streamrnn.wordsearch import WordDecoder

HALVES = ("even", "odd")
KNOBS = {"ngram_weight": float, "word_score": float, "word_beam_size": int, "word_beam_threshold": float,
         "word_beam_tokens": int}


def number_list(kind):
    def parse(text: str) -> list:
        return [kind(part) for part in text.split(",")]
    parse.__name__ = f"comma-separated {kind.__name__}"  # argparse names a value it cannot parse by this
    return parse


def add_arguments(parser) -> None:
    parser.add_argument("manifest", nargs="+", help="JSONL manifests of held-out speech")
    parser.add_argument("--split", choices=["all", "train", "dev"], default="dev")
    parser.add_argument("--sample", type=int, default=0, help="only N utterances of each manifest, evenly spread")
    for knob, kind in KNOBS.items():
        parser.add_argument("--" + knob.replace("_", "-"), type=number_list(kind),
                            help=f"decoder.{knob} values to try, comma-separated (default: the config's); "
                                 "a list that starts with a minus takes '=', e.g. --word-score=-1,0,1")
    parser.add_argument("--json", action="store_true", help="the results as JSON")


@dataclasses.dataclass
class Recording:
    reference: str
    half: str
    rows: np.ndarray


def recordings(recognizer: Recognizer, manifests: list[str], split: str, sample: int) -> list[Recording]:
    """The acoustic model's log-probs of every utterance, each marked with its half."""
    found = []
    for manifest in manifests:
        utterances = spread(load_manifest(manifest, split), sample)
        if not utterances:
            raise ValueError(f"{manifest}: no utterances in split {split!r}")
        for number, utterance in enumerate(utterances):
            rows = recognizer.log_probs(load_16k(utterance.audio), SAMPLE_RATE)
            found.append(Recording(utterance.text, HALVES[number % 2], rows))
    return found


def transcript(recognizer: Recognizer, rows: np.ndarray) -> str:
    """What a session fed these rows says: its finals at each endpoint and at the end."""
    decoder = WordDecoder(recognizer.word_search, recognizer.config.endpoint, recognizer.acoustic.frame_shift_s)
    texts = [utterance.text for row in rows if (utterance := decoder.advance_row(row))]
    return " ".join(texts + [decoder.finish_utterance().text]).strip()


def score_setting(recognizer: Recognizer, found: list[Recording], setting: dict) -> dict:
    # the search reads its weights and beams when a session's decoder is made: one search serves every setting
    recognizer.word_search.config = dataclasses.replace(recognizer.config.decoder, **setting)
    errors = {half: ErrorRate() for half in ("all",) + HALVES}
    started = time.perf_counter()
    for recording in found:
        hypothesis = transcript(recognizer, recording.rows)
        for half in ("all", recording.half):
            errors[half].add(recording.reference, hypothesis)
    return {**setting, "search_s": time.perf_counter() - started,
            **{f"wer_{half}": rate.wer for half, rate in errors.items()}, "cer_all": errors["all"].cer}


def settings(config: Config, args) -> list[dict]:
    grid = {knob: getattr(args, knob) or [getattr(config.decoder, knob)] for knob in KNOBS}
    return [dict(zip(grid, values)) for values in itertools.product(*grid.values())]


def tune(args) -> dict:
    config = load_config(args.config)
    if config.decoder.method != "lexicon":
        raise ValueError(f"tune sets the lexicon search's weights; decoder.method is {config.decoder.method!r}")
    grid = settings(config, args)
    for setting in grid:  # every value is checked before the acoustic model runs
        validate(dataclasses.replace(config, decoder=dataclasses.replace(config.decoder, **setting)), "tune")
    recognizer = Recognizer(config)
    found = recordings(recognizer, args.manifest, args.split, args.sample)
    results = []
    for number, setting in enumerate(grid, 1):
        results.append(score_setting(recognizer, found, setting))
        print(f"setting {number}/{len(grid)}: {setting} WER even {percent(results[-1]['wer_even'])}",
              file=sys.stderr, flush=True)
    best = min(results, key=lambda r: (r["wer_even"], r["wer_all"]))
    return {"utterances": {half: sum(r.half == half for r in found) for half in HALVES}, "results": results,
            "best": {knob: best[knob] for knob in KNOBS}}


def report(result: dict) -> str:
    headers = list(KNOBS) + ["WER even (tuned on)", "WER odd (held out)", "WER all", "CER all", "search s"]
    rows = [[r[k] for k in KNOBS] + [percent(r["wer_even"]), percent(r["wer_odd"]), percent(r["wer_all"]),
                                     percent(r["cer_all"]), f"{r['search_s']:.1f}"] for r in result["results"]]
    best = "\n".join(f"{knob} = {value}" for knob, value in result["best"].items())
    return (f"utterances: {result['utterances']['even']} even, {result['utterances']['odd']} odd\n"
            f"{markdown_table(headers, rows)}\n\nbest on the even half, for config.toml's [decoder]:\n{best}")


def main(args) -> None:
    if args.sample < 0:
        raise ValueError(f"--sample must not be negative, got {args.sample}")
    result = tune(args)
    print(json.dumps(result, indent=2) if args.json else report(result))
