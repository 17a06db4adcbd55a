"""`streamrnn train lm`: the word LSTM language model on text files and transcripts."""
from __future__ import annotations

import math
from pathlib import Path

import torch

from streamrnn.checkpoint import SaveClock, load_training_state, save_model, save_training_state
from streamrnn.lm import LanguageModel, LMConfig, Vocabulary
from streamrnn.train.corpus import corpus_sentences, top_words
from streamrnn.train.ngram import read_sentences
from streamrnn.train.progress import TrainingLog


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


class Trainer:
    """Truncated-BPTT training over one long id stream per batch row, with checkpoints that
    resume mid-epoch, halving of the learning rate when dev perplexity stops improving, and
    early stopping after `patience` such epochs."""

    def __init__(self, args):
        self.args, self.out = args, Path(args.out)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        torch.manual_seed(args.seed)
        train_sentences = read_sentences(args.train, args.blocklist)
        vocabulary = top_words(train_sentences, args.vocab - 2)
        self.model = LanguageModel(LMConfig(vocab=len(vocabulary) + 2, dim=args.dim, layers=args.layers),
                                   vocabulary).to(self.device)
        self.train_streams = as_streams(stream_ids(train_sentences, self.model.vocabulary), args.batch).to(self.device)
        self.dev_streams = as_streams(stream_ids(corpus_sentences(args.dev), self.model.vocabulary), 8).to(self.device)
        print(f"train tokens {self.train_streams.numel()}, dev tokens {self.dev_streams.numel()}, "
              f"vocab {len(self.model.vocabulary)}")
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=args.lr, weight_decay=1e-2)
        self.state = {"epoch": 0, "step": 0, "best": float("inf"), "bad_epochs": 0, "history": []}
        if args.resume and (self.out / "checkpoint.pt").exists():
            self.resume()

    def resume(self):
        self.state = load_training_state(self.out / "checkpoint.pt", self.model, self.optimizer, self.device)
        print(f"resumed at epoch {self.state['epoch']} step {self.state['step']}")

    def save_checkpoint(self):
        save_training_state(self.out / "checkpoint.pt", self.model, self.optimizer, self.state, self.args)

    def train_step(self, start: int, state):
        inputs = self.train_streams[:, start:start + self.args.bptt]
        targets = self.train_streams[:, start + 1:start + 1 + self.args.bptt]
        logits, state = self.model(inputs, state)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        self.optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 0.5)
        self.optimizer.step()
        return loss.item(), detach(state)

    def run(self):
        log = TrainingLog(self.out, "lm")
        clock = SaveClock(self.args.save_minutes, self.args.max_minutes)
        steps = (self.train_streams.shape[1] - 1) // self.args.bptt
        while self.state["epoch"] < self.args.epochs:
            # The recurrent state restarts from zero on resume mid-epoch; one batch of context is lost.
            hidden, losses = None, []
            with log.epoch(self.state["epoch"], steps, self.state["step"]) as advance:
                while self.state["step"] < steps:
                    loss, hidden = self.train_step(self.state["step"] * self.args.bptt, hidden)
                    self.state["step"] += 1
                    losses.append(loss)
                    advance(loss)
                    if clock.tick(self.save_checkpoint):
                        return
            if self.end_epoch(sum(losses) / max(len(losses), 1), log):
                break

    def end_epoch(self, train_loss: float, log) -> bool:
        dev_ppl = perplexity(self.model, self.dev_streams, self.args.bptt)
        self.state["history"].append({"epoch": self.state["epoch"], "train_loss": train_loss,
                                      "dev_perplexity": dev_ppl})
        log.record(self.state["history"])
        self.state["epoch"] += 1
        self.state["step"] = 0
        if dev_ppl < self.state["best"]:
            self.state["best"], self.state["bad_epochs"] = dev_ppl, 0
            save_model(self.model, "language", self.out / "lm.pt",
                       meta={"dev_perplexity": dev_ppl, "epoch": self.state["epoch"] - 1},
                       extra={"vocabulary": self.model.vocabulary.words})
        else:
            self.state["bad_epochs"] += 1
            for group in self.optimizer.param_groups:
                group["lr"] *= 0.5
        self.save_checkpoint()
        return self.state["bad_epochs"] >= self.args.patience


def add_arguments(parser) -> None:
    parser.add_argument("--train", nargs="+", required=True, help="text files, folders of .txt, JSONL manifests")
    parser.add_argument("--dev", nargs="+", required=True, help="held-out text for perplexity and early stopping")
    parser.add_argument("--blocklist", metavar="FILE",
                        help="SHA-1s of evaluation text (e.g. ../shared/data/eval-blocklist.txt): training "
                             "sentences that contain one are dropped, as `train ngram --blocklist` drops them")
    parser.add_argument("--out", default="runs/lm")
    parser.add_argument("--vocab", type=int, default=LMConfig.vocab)
    parser.add_argument("--dim", type=int, default=LMConfig.dim)
    parser.add_argument("--layers", type=int, default=LMConfig.layers)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--bptt", type=int, default=35)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--patience", type=int, default=2, help="epochs without dev perplexity gain before stopping")
    parser.add_argument("--save-minutes", type=float, default=5.0)
    parser.add_argument("--max-minutes", type=float, default=0.0, help="stop (resumably) after this long")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--seed", type=int, default=0)


def main(args) -> None:
    Trainer(args).run()
