"""The `streamrnn` command line."""
from __future__ import annotations

import argparse
import importlib
import json
import sys
from contextlib import nullcontext

from streamrnn.config import load_config, validate
from streamrnn_client.protocol import StreamrnnError

# Commands whose arguments their own module adds (importing it, and so torch, only when they run).
MODULE_COMMANDS = {
    "bench": ("concurrent real-time streams against a daemon: latency, RTF, capacity", "streamrnn.tools.bench"),
    "soak": ("many clients streaming, dropping and resuming against a daemon", "streamrnn.tools.soak"),
    "chaos": ("replicas behind nginx sharing sessions through Redis, killed at random while clients stream",
              "streamrnn.tools.chaos"),
    "synth": ("synthetic training speech from text (TTS voices)", "streamrnn.train.synth"),
    "tune": ("the lexicon search's n-gram weight, word score and beam, picked on held-out speech",
             "streamrnn.tools.tune"),
}
TRAIN_KINDS = {"am": ("train the CTC acoustic model", "streamrnn.train.am"),
               "lm": ("train the word LSTM language model", "streamrnn.train.lm"),
               "ngram": ("build the lexicon search's vocabulary and word n-gram (ARPA) from text",
                         "streamrnn.train.ngram"),
               "lexicon": ("pronunciations of a whole vocabulary, for phone models (CMUdict, then the G2P model's guesses)",
                           "streamrnn.train.lexicon"),
               "g2p": ("the letter-to-phone model that guesses pronunciations CMUdict lacks", "streamrnn.train.g2p"),
               "average": ("one acoustic model averaging several checkpoints of a run", "streamrnn.train.average")}


def build_parser(command: str | None = None, kind: str | None = None) -> argparse.ArgumentParser:
    """The whole command line, with the arguments of the module-defined commands only for
    `command` (the one that runs; for train, its `kind`), so that help and the light commands
    start in a fraction of a second."""
    parser = argparse.ArgumentParser(prog="streamrnn", description="Streaming speech and text recognition.")
    parser.add_argument("--config", help="config.toml (defaults for every key not in it)")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the daemon: gRPC and WebSocket/HTTP")
    serve.add_argument("--host", help="listen address (server.host)")
    serve.add_argument("--port", type=int, help="WebSocket/HTTP port (server.http_port)")
    serve.add_argument("--grpc-port", type=int, help="gRPC port (server.grpc_port)")
    serve.add_argument("--redis-url", help="share sessions with other replicas through this Redis (cluster.redis_url)")
    serve.add_argument("--max-batch", type=int, help="session chunks per engine batch; 1: no batching "
                                                     "(batching.max_batch)")

    transcribe = commands.add_parser("transcribe", help="stream audio files through the engine as if live")
    transcribe.add_argument("audio", nargs="+", help="wav, flac, ogg, opus or mp3 files")
    transcribe.add_argument("--chunk-ms", type=int, default=100)
    transcribe.add_argument("--json", action="store_true", help="one JSON event per line")
    transcribe.add_argument("--phrase", action="append", default=[], help="a phrase to boost (repeatable)")

    evaluate = commands.add_parser("eval", help="WER, CER and RTF over JSONL manifests, streaming and offline")
    evaluate.add_argument("manifest", nargs="+")
    evaluate.add_argument("--split", choices=["all", "train", "dev"], default="all")
    evaluate.add_argument("--chunk-ms", type=int, default=100, help="streaming chunk size")
    evaluate.add_argument("--peer", action="append", default=[], choices=["pocketsphinx"],
                          help="also evaluate this recognizer on the same audio and chunks")
    evaluate.add_argument("--json", action="store_true", help="the result rows as JSON")
    evaluate.add_argument("--hyps", help="write the reference and every system's hypotheses per utterance to this JSONL")
    evaluate.add_argument("--limit", type=int, default=0, help="only the first N utterances of each manifest")
    evaluate.add_argument("--sample", type=int, default=0,
                          help="only N utterances of each manifest, evenly spread over it (every speaker)")

    evaluate_lm = commands.add_parser("eval-lm", help="the LM against a Kneser-Ney n-gram on held-out text")
    evaluate_lm.add_argument("--train", nargs="+", required=True,
                             help="the n-gram's training text, as for train lm: text files, folders of .txt, JSONL manifests")
    evaluate_lm.add_argument("--test", nargs="+", required=True, help="held-out text files or folders")
    evaluate_lm.add_argument("--order", type=int, default=3, help="n-gram order")
    evaluate_lm.add_argument("--max-test-tokens", type=int, default=0,
                             help="score only the first N test tokens (0: all)")
    evaluate_lm.add_argument("--json", action="store_true", help="the results as JSON")

    suggest = commands.add_parser("suggest", help="the LM's most likely next words")
    suggest.add_argument("text", nargs="?", default="")
    suggest.add_argument("-n", "--count", type=int, default=5)
    score = commands.add_parser("score", help="the LM's log-probability and perplexity of a sentence")
    score.add_argument("text")

    from streamrnn_client import cli as client_cli  # no torch: stream, mic and subscribe start fast
    client_cli.add_arguments(commands)
    for name, (help_text, module) in MODULE_COMMANDS.items():
        parser_of_command = commands.add_parser(name, help=help_text)
        if name == command:
            importlib.import_module(module).add_arguments(parser_of_command)

    key = commands.add_parser("key", help="API keys for the daemon's [auth] section")
    key.add_argument("action", choices=["new"], help="new: print a fresh random key and its config line")

    train = commands.add_parser("train", help="train the acoustic model, the language model, the n-gram or the lexicon")
    kinds = train.add_subparsers(dest="kind", required=True)
    for name, (help_text, module) in TRAIN_KINDS.items():
        parser_of_kind = kinds.add_parser(name, help=help_text)
        if command == "train" and kind == name:
            importlib.import_module(module).add_arguments(parser_of_kind)
    return parser


def recognizer(args):
    from streamrnn.engine.recognizer import Recognizer
    return Recognizer(load_config(args.config))


def run_serve(args) -> None:
    from streamrnn.serve import daemon
    config = load_config(args.config)
    for key, value in (("host", args.host), ("http_port", args.port), ("grpc_port", args.grpc_port)):
        if value is not None:
            setattr(config.server, key, value)
    if args.max_batch is not None:
        config.batching.max_batch = args.max_batch
        validate(config, "--max-batch")
    if args.redis_url is not None:
        config.cluster.redis_url = args.redis_url
        validate(config, "--redis-url")
    daemon.main(config)


def run_transcribe(args) -> None:
    from streamrnn.engine.transcribe import stream_file
    engine = recognizer(args)
    live = sys.stdout.isatty() and not args.json
    for path in args.audio:
        if len(args.audio) > 1 and not args.json:
            print(f"# {path}")
        for event in stream_file(engine, path, args.chunk_ms, phrases=args.phrase):
            if args.json:
                print(json.dumps({"file": str(path), **event}), flush=True)
            elif event["type"] == "partial" and live:
                print(f"\r\033[K{event['text']}", end="", flush=True)
            elif event["type"] == "final":
                print(("\r\033[K" if live else "") + event["text"], flush=True)


def run_eval(args) -> None:
    from streamrnn.tools.evaluate import Streamrnn, evaluate, results_table, summary_lines
    from streamrnn.tools.peer import PEERS
    if args.chunk_ms <= 0 or args.limit < 0 or args.sample < 0:
        raise ValueError("--chunk-ms must be positive, --limit and --sample not negative")
    systems = [Streamrnn(recognizer(args))] + [PEERS[name]() for name in dict.fromkeys(args.peer)]
    rows = []
    with open(args.hyps, "w", buffering=1) if args.hyps else nullcontext() as hyps:
        for manifest in args.manifest:
            rows += evaluate(systems, manifest, args.split, args.chunk_ms, hyps, args.limit, args.sample)
    if args.json:
        print(json.dumps(rows, indent=2))
    elif len(rows) == 1:
        print("\n".join(summary_lines(rows[0])))
    else:
        print(f"split {args.split}, streaming in {args.chunk_ms} ms chunks, offline: each file at once")
        print(results_table(rows))


def run_eval_lm(args) -> None:
    from streamrnn.tools.lm_eval import evaluate_lms, results_table, summary_line
    if args.max_test_tokens < 0:
        raise ValueError(f"--max-test-tokens must not be negative, got {args.max_test_tokens}")
    result = evaluate_lms(language_model(args), args.train, args.test, args.order, args.max_test_tokens)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(summary_line(result))
        print(results_table(result))


def language_model(args):
    from streamrnn.engine.recognizer import load_language_model
    return load_language_model(load_config(args.config))


def run_suggest(args) -> None:
    from streamrnn.engine.recognizer import text_suggestions
    for item in text_suggestions(language_model(args), args.text, args.count):
        print(f"{item['word']}\t{item['p']:.4f}")


def run_score(args) -> None:
    from streamrnn.engine.recognizer import text_score
    result = text_score(language_model(args), args.text)
    print(f"log_prob {result['log_prob']:.3f}")
    print(f"perplexity {result['perplexity']:.2f}")


def run_key(args) -> None:
    from streamrnn.serve.auth import key_config_line, new_secret
    key = new_secret()
    print(key)
    print("# the key above is for the client; the daemon keeps only its hash: put this line under [auth]")
    print("# in config.toml (or add the hash to the list there)")
    print(key_config_line(key))


def run_train(args) -> None:
    importlib.import_module(TRAIN_KINDS[args.kind][1]).main(args)


def run_synth(args) -> None:
    from streamrnn.train import synth
    synth.main(args, load_config(args.config).synth)


def run_bench(args) -> None:
    from streamrnn.tools import bench
    bench.main(args)


def run_soak(args) -> None:
    from streamrnn.tools import soak
    soak.main(args)


def run_chaos(args) -> None:
    from streamrnn.tools import chaos
    chaos.main(args)


def run_tune(args) -> None:
    from streamrnn.tools import tune
    tune.main(args)


def run_remote(args) -> None:
    from streamrnn_client import cli as client_cli
    client_cli.run(args)


COMMANDS = {"serve": run_serve, "stream": run_remote, "mic": run_remote, "subscribe": run_remote,
            "transcribe": run_transcribe, "eval": run_eval, "eval-lm": run_eval_lm, "suggest": run_suggest,
            "score": run_score, "key": run_key, "train": run_train, "synth": run_synth, "bench": run_bench,
            "soak": run_soak, "chaos": run_chaos, "tune": run_tune}


def command_of(argv: list[str]) -> tuple[str | None, str | None]:
    """The command named in `argv` and the word after it (train's kind): the first two words that
    are not options or --config's value."""
    words, named = iter(argv), []
    for word in words:
        if word == "--config":
            next(words, None)
        elif not word.startswith("-"):
            named.append(word)
    return tuple((named + [None, None])[:2])


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(*command_of(argv)).parse_args(argv)
    try:
        COMMANDS[args.command](args)
    except (StreamrnnError, ValueError, OSError) as err:
        print(f"streamrnn: error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main(sys.argv[1:])
