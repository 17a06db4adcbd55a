"""`streamrnn train g2p`: the letter-to-phone model on a CMUdict-format dictionary.

Words are split by a hash of their spelling: 90% train, 5% dev (early stopping, the best model),
5% test (reported once, at the end). A guess counts as right when it equals any of the word's
pronunciations; the phone error rate is against the nearest one.
"""
from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import torch

from streamrnn.checkpoint import SaveClock, load_model, load_training_state, save_model, save_training_state
from streamrnn.g2p import END, OUTPUTS, PAD, START, G2PConfig, G2PModel, letter_ids, spellable
from streamrnn.phones import load_lexicon
from streamrnn.train.progress import TrainingLog
from streamrnn.wer import edit_distance

PHONE_IDS = {phone: i for i, phone in enumerate(OUTPUTS)}


def add_arguments(parser) -> None:
    parser.add_argument("--dictionary", help="a CMUdict-format dictionary (default: pocketsphinx's CMUdict)")
    parser.add_argument("--out", default="runs/g2p", help="directory for checkpoints and g2p.pt")
    parser.add_argument("--hidden", type=int, default=G2PConfig.hidden)
    parser.add_argument("--encoder-layers", type=int, default=G2PConfig.encoder_layers)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch", type=int, default=256, help="words per batch")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--patience", type=int, default=3,
                        help="stop after this many epochs without a better dev WER (each halves the learning rate)")
    parser.add_argument("--save-minutes", type=float, default=5.0)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--seed", type=int, default=0)


def split_of(word: str) -> str:
    bucket = zlib.crc32(word.encode()) % 100
    return "train" if bucket < 90 else "dev" if bucket < 95 else "test"


def splits(lexicon) -> dict[str, list[tuple[str, list[tuple[str, ...]]]]]:
    """(word, pronunciations) of each split, spellable words only."""
    parts = {"train": [], "dev": [], "test": []}
    for word, spellings in lexicon.items():
        if spellable(word):
            parts[split_of(word)].append((word, spellings))
    return parts


def batch_tensors(entries):
    """Letters, their lengths, the decoder's inputs (<s> + phones) and targets (phones + </s>),
    each word's first pronunciation."""
    letters, lengths = letter_ids([word for word, _ in entries])
    phones = [[PHONE_IDS[p] for p in spellings[0]] for _, spellings in entries]
    width = max(len(p) for p in phones) + 1
    previous = torch.full((len(entries), width), PAD, dtype=torch.long)
    targets = torch.full((len(entries), width), PAD, dtype=torch.long)
    for row, ids in enumerate(phones):
        previous[row, :len(ids) + 1] = torch.tensor([START] + ids)
        targets[row, :len(ids) + 1] = torch.tensor(ids + [END])
    return letters, lengths, previous, targets


def error_rates(model: G2PModel, entries, batch: int = 512) -> tuple[float, float]:
    """Word and phone error rates of the model's greedy guesses."""
    model.eval()
    wrong = errors = length = 0
    for start in range(0, len(entries), batch):
        chunk = entries[start:start + batch]
        for (word, spellings), guess in zip(chunk, model.guess([word for word, _ in chunk])):
            wrong += guess not in spellings
            nearest = min(spellings, key=lambda reference: edit_distance(reference, guess))
            errors += edit_distance(nearest, guess)
            length += len(nearest)
    model.train()
    return wrong / max(len(entries), 1), errors / max(length, 1)


class Trainer:
    def __init__(self, args):
        self.args, self.out = args, Path(args.out)
        torch.manual_seed(args.seed)
        self.data = splits(load_lexicon(args.dictionary))
        print(" ".join(f"{name}: {len(entries)} words" for name, entries in self.data.items()))
        if not self.data["train"] or not self.data["dev"]:
            raise ValueError("the dictionary has too few words to train and check a G2P model")
        self.model = G2PModel(G2PConfig(hidden=args.hidden, encoder_layers=args.encoder_layers))
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=args.lr, weight_decay=1e-4)
        self.state = {"epoch": 0, "batch": 0, "best": 1e9, "bad_epochs": 0, "history": []}
        if args.resume and (self.out / "checkpoint.pt").exists():
            self.state = load_training_state(self.out / "checkpoint.pt", self.model, self.optimizer, "cpu")
            print(f"resumed at epoch {self.state['epoch']} batch {self.state['batch']}")

    def batches(self, epoch: int) -> list[list]:
        train = self.data["train"]
        order = np.random.default_rng(self.args.seed + epoch).permutation(len(train))
        return [[train[i] for i in order[start:start + self.args.batch]]
                for start in range(0, len(order), self.args.batch)]

    def train_step(self, entries) -> float:
        letters, lengths, previous, targets = batch_tensors(entries)
        logits = self.model(letters, lengths, previous)
        loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, ignore_index=PAD)
        self.optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 5.0)
        self.optimizer.step()
        return loss.item()

    def run(self) -> None:
        log = TrainingLog(self.out, "g2p")
        clock = SaveClock(self.args.save_minutes, 0)
        while self.state["epoch"] < self.args.epochs and self.state["bad_epochs"] < self.args.patience:
            batches, losses = self.batches(self.state["epoch"]), []
            with log.epoch(self.state["epoch"], len(batches), self.state["batch"]) as advance:
                for entries in batches[self.state["batch"]:]:
                    losses.append(self.train_step(entries))
                    self.state["batch"] += 1
                    advance(losses[-1])
                    clock.tick(self.save)
            self.end_epoch(float(np.mean(losses)) if losses else float("nan"), log)
            self.save()
        best = load_model("g2p", self.out / "g2p.pt")
        wer, per = error_rates(best, self.data["test"])
        print(f"g2p test ({len(self.data['test'])} words): WER {wer:.2%} PER {per:.2%}")

    def save(self) -> None:
        save_training_state(self.out / "checkpoint.pt", self.model, self.optimizer, self.state, self.args)

    def end_epoch(self, train_loss: float, log) -> None:
        wer, per = error_rates(self.model, self.data["dev"])
        self.state["history"].append({"epoch": self.state["epoch"], "train_loss": train_loss, "dev_wer": wer,
                                      "dev_per": per})
        log.record(self.state["history"])
        self.state["epoch"] += 1
        self.state["batch"] = 0
        if wer < self.state["best"]:
            self.state["best"], self.state["bad_epochs"] = wer, 0
            save_model(self.model, "g2p", self.out / "g2p.pt",
                       meta={"dev_wer": wer, "dev_per": per, "epoch": self.state["epoch"],
                             "dictionary": self.args.dictionary or "CMUdict (pocketsphinx cmudict-en-us.dict)"})
        else:
            self.state["bad_epochs"] += 1
            for group in self.optimizer.param_groups:
                group["lr"] /= 2


def main(args) -> None:
    Trainer(args).run()
