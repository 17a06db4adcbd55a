"""`streamrnn eval-lm`: the configured LSTM LM against a Kneser-Ney n-gram trained on the same
text, with the LSTM's vocabulary and sentence boundaries, on held-out text.

Both read the test text as one stream: a boundary, then each sentence followed by a boundary,
words outside the vocabulary as <unk>. Every id after the first is a target, predicted from
all that came before (the n-gram sees the last order-1 of it).
- perplexity: exp of the mean negative log-probability over every target, boundaries and
  <unk> included (as in `streamrnn train lm`);
- top-1 / top-3 accuracy: over the targets that are vocabulary words (not the boundary, not
  <unk>), how often the word is the model's most likely / among its three most likely next
  words, ranking every vocabulary word except the boundary and <unk> (what suggestions offer).
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch

from streamrnn.lm import LMRunner, Vocabulary
from streamrnn.tools.ngram import KneserNey
from streamrnn.tools.report import markdown_table, percent
from streamrnn.train.corpus import corpus_sentences
from streamrnn.train.lm import stream_ids

TOP = 3
SEGMENT = 1024  # test ids per LSTM forward pass; the state carries over


def id_stream(sources: list[str], vocabulary: Vocabulary) -> np.ndarray:
    sentences = corpus_sentences(sources)
    if not sentences:
        raise ValueError(f"no sentences in {' '.join(map(str, sources))}")
    return np.concatenate([[vocabulary.boundary], stream_ids(sentences, vocabulary).numpy()])


def lstm_predictions(runner: LMRunner, ids: np.ndarray, excluded: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """log P(ids[i+1] | ids[..i]) and the TOP best next ids, for every target."""
    log_probs, tops, state = [], [], None
    stream = torch.from_numpy(ids).to(runner.device)
    with torch.inference_mode():
        for start in range(0, len(ids) - 1, SEGMENT):
            targets = stream[start + 1:start + 1 + SEGMENT]
            logits, state = runner.model(stream[start:start + len(targets)][None], state)
            scores = torch.log_softmax(logits[0].float(), dim=-1)
            log_probs.append(scores.gather(1, targets[:, None])[:, 0].cpu())
            scores[:, excluded] = -math.inf
            tops.append(scores.topk(TOP, dim=-1).indices.cpu())
    return torch.cat(log_probs).double().numpy(), torch.cat(tops).numpy()


def ngram_predictions(model: KneserNey, ids: np.ndarray, excluded: list[int]) -> tuple[np.ndarray, np.ndarray]:
    histories = model.histories([ids[max(0, i - model.order + 1):i + 1] for i in range(len(ids) - 1)])
    log_probs = np.log(model.probabilities(histories, ids[1:]))
    tops = np.array([model.top(history, TOP, excluded) for history in histories])
    return log_probs, tops


def scores(log_probs: np.ndarray, tops: np.ndarray, targets: np.ndarray, excluded: list[int]) -> dict:
    words = ~np.isin(targets, excluded)
    return {"perplexity": float(np.exp(-log_probs.mean())),
            "top1": float((tops[words, 0] == targets[words]).mean()),
            "top3": float((tops[words] == targets[words, None]).any(axis=1).mean())}


def evaluate_lms(runner: LMRunner, train: list[str], test: list[str], order: int = 3,
                 max_test_tokens: int = 0) -> dict:
    vocabulary = runner.vocabulary
    excluded = [vocabulary.boundary, vocabulary.unknown]
    train_ids = id_stream(train, vocabulary)
    test_ids = id_stream(test, vocabulary)[: max_test_tokens + 1 if max_test_tokens else None]
    targets = test_ids[1:]
    result = {"vocabulary": len(vocabulary), "train_tokens": len(train_ids) - 1, "test_tokens": len(targets),
              "test_unk_rate": float(np.mean(targets == vocabulary.unknown)),
              "accuracy_targets": int(np.count_nonzero(~np.isin(targets, excluded))), "models": []}
    started = time.perf_counter()
    predictions = lstm_predictions(runner, test_ids, excluded)
    result["models"].append({"model": "LSTM", "seconds": time.perf_counter() - started,
                             **scores(*predictions, targets, excluded)})
    started = time.perf_counter()
    ngram = KneserNey(train_ids, len(vocabulary), order, pad=vocabulary.boundary)
    predictions = ngram_predictions(ngram, test_ids, excluded)
    result["models"].append({"model": f"Kneser-Ney {order}-gram", "seconds": time.perf_counter() - started,
                             **scores(*predictions, targets, excluded)})
    return result


def results_table(result: dict) -> str:
    rows = [[m["model"], f"{m['perplexity']:.1f}", percent(m["top1"]), percent(m["top3"]), f"{m['seconds']:.0f}"]
            for m in result["models"]]
    return markdown_table(["model", "perplexity", "top-1", "top-3", "seconds"], rows)


def summary_line(result: dict) -> str:
    return (f"vocabulary {result['vocabulary']}, train tokens {result['train_tokens']}, "
            f"test tokens {result['test_tokens']} (<unk> {percent(result['test_unk_rate'])}), "
            f"top-k over {result['accuracy_targets']} word targets")
