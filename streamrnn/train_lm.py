"""`streamrnn train lm`: the word LSTM language model on text files and transcripts."""
from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from .checkpoint import save_model
from .corpus import corpus_sentences, top_words
from .lm import LanguageModel, LMConfig, Vocabulary
from .progress import TrainingLog


def stream_ids(sentences, vocabulary: Vocabulary) -> torch.Tensor:
    """All sentences as one id stream, each followed by the boundary token."""
    ids = []
    for sentence in sentences:
        ids += vocabulary.ids(sentence)
        ids.append(vocabulary.boundary)
    return torch.tensor(ids, dtype=torch.long)


def as_streams(ids: torch.Tensor, count: int) -> torch.Tensor:
    length = len(ids) // count
    return ids[: length * count].view(count, length)


@torch.no_grad()
def perplexity(model: LanguageModel, streams: torch.Tensor, bptt: int) -> float:
    model.eval()
    total, count, state = 0.0, 0, None
    for start in range(0, streams.shape[1] - 1, bptt):
        inputs = streams[:, start:start + bptt]
        targets = streams[:, start + 1:start + 1 + bptt]
        inputs = inputs[:, : targets.shape[1]]
        logits, state = model(inputs, state)
        total += torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                                   reduction="sum").item()
        count += targets.numel()
    model.train()
    return math.exp(total / max(count, 1))


def detach(state):
    return tuple(s.detach() for s in state)


def train(args) -> None:
    torch.manual_seed(args.seed)
    train_sentences = corpus_sentences(args.train)
    vocabulary = top_words(train_sentences, args.vocab - 2)
    model = LanguageModel(LMConfig(vocab=len(vocabulary) + 2, dim=args.dim, layers=args.layers), vocabulary)
    train_streams = as_streams(stream_ids(train_sentences, model.vocabulary), args.batch)
    dev_streams = as_streams(stream_ids(corpus_sentences(args.dev), model.vocabulary), 8)
    print(f"train tokens {train_streams.numel()}, dev tokens {dev_streams.numel()}, vocab {len(model.vocabulary)}")
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-2)
    log, out, started = TrainingLog(Path(args.out), "lm"), Path(args.out), time.time()
    history, best = [], float("inf")
    steps = (train_streams.shape[1] - 1) // args.bptt
    for epoch in range(args.epochs):
        state, losses = None, []
        with log.epoch(epoch, steps, 0) as advance:
            for step in range(steps):
                start = step * args.bptt
                inputs = train_streams[:, start:start + args.bptt]
                targets = train_streams[:, start + 1:start + 1 + args.bptt]
                logits, state = model(inputs, state)
                state = detach(state)
                loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
                optimizer.step()
                losses.append(loss.item())
                advance(loss.item())
                if args.max_minutes and time.time() - started > args.max_minutes * 60:
                    break
        dev_ppl = perplexity(model, dev_streams, args.bptt)
        history.append({"epoch": epoch, "train_loss": sum(losses) / len(losses), "dev_perplexity": dev_ppl})
        log.record(history)
        if dev_ppl < best:
            best = dev_ppl
            save_model(model, "language", out / "lm.pt", meta={"dev_perplexity": dev_ppl, "epoch": epoch},
                       extra={"vocabulary": model.vocabulary.words})
        for group in optimizer.param_groups:
            group["lr"] *= 0.5
        if args.max_minutes and time.time() - started > args.max_minutes * 60:
            break


def add_arguments(parser) -> None:
    parser.add_argument("--train", nargs="+", required=True, help="text files, folders of .txt, JSONL manifests")
    parser.add_argument("--dev", nargs="+", required=True, help="held-out text for perplexity")
    parser.add_argument("--out", default="runs/lm")
    parser.add_argument("--vocab", type=int, default=LMConfig.vocab)
    parser.add_argument("--dim", type=int, default=LMConfig.dim)
    parser.add_argument("--layers", type=int, default=LMConfig.layers)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--bptt", type=int, default=35)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--max-minutes", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)


def main(args) -> None:
    train(args)
