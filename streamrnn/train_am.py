"""`streamrnn train am`: CTC training of the acoustic model on JSONL manifests."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from .acoustic import AcousticConfig, AcousticModel
from .checkpoint import save_model
from .data import cached_features, length_batches, load_manifest, normalization_stats, parse_weighted
from .metrics import ErrorRate
from .progress import TrainingLog
from .tokens import BLANK, decode, encode


def spec_augment(features: torch.Tensor, fill: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Two frequency masks and a time mask per 5 s, filled with the mean (zero after CMVN)."""
    features = features.clone()
    batch, frames, dim = features.shape
    for b in range(batch):
        for _ in range(2):
            width = int(rng.integers(0, 16))
            start = int(rng.integers(0, dim - width + 1))
            features[b, :, start:start + width] = fill[start:start + width]
        for _ in range(max(1, frames // 500)):
            width = int(rng.integers(0, min(40, frames // 10 + 1)))
            start = int(rng.integers(0, frames - width + 1))
            features[b, start:start + width] = fill
    return features


def collate(features: list[torch.Tensor], texts: list[list[int]], device):
    lengths = torch.tensor([len(f) for f in features])
    padded = torch.nn.utils.rnn.pad_sequence([f.float() for f in features], batch_first=True)
    targets = torch.tensor([t for text in texts for t in text], dtype=torch.long)
    target_lengths = torch.tensor([len(t) for t in texts])
    return padded.to(device), lengths, targets, target_lengths


def greedy_text(log_probs: torch.Tensor) -> str:
    best = log_probs.argmax(-1).tolist()
    collapsed = [t for i, t in enumerate(best) if t != BLANK and (i == 0 or t != best[i - 1])]
    return decode(collapsed)


@torch.no_grad()
def dev_wer(model: AcousticModel, features, texts, device) -> float:
    model.eval()
    errors = ErrorRate()
    for f, text in zip(features, texts):
        log_probs, _ = model(f.float()[None].to(device))
        errors.add(text, greedy_text(log_probs[0].cpu()))
    model.train()
    return errors.wer


class Trainer:
    def __init__(self, args):
        self.args = args
        self.out = Path(args.out)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.rng = np.random.default_rng(args.seed)
        self.load_data()
        self.model = AcousticModel(AcousticConfig(rnn=args.rnn, hidden=args.hidden, layers=args.layers,
                                                  stack=args.stack))
        mean, std = normalization_stats(self.train[1.0])
        self.model.set_normalization(mean, std)
        self.model.to(self.device)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=args.lr, weight_decay=1e-2)
        self.state = {"epoch": 0, "batch": 0, "step": 0, "best_wer": 1e9, "bad_epochs": 0, "history": []}
        if args.resume and (self.out / "checkpoint.pt").exists():
            self.resume()

    def load_data(self):
        cache = Path(self.args.cache)
        self.train, self.train_texts, self.dev, self.dev_texts = {}, [], [], []
        for spec in self.args.manifests:
            path, weight = parse_weighted(spec)
            train = load_manifest(path, "train")
            dev = load_manifest(path, "dev")
            repeat = max(1, round(weight))
            for speed in self.args.speeds:
                feats = cached_features(train, speed, cache, f"{path.stem}-train")
                self.train.setdefault(speed, []).extend(feats * repeat)
            self.train_texts.extend([encode(u.text) for u in train] * repeat)
            self.dev.extend(cached_features(dev, 1.0, cache, f"{path.stem}-dev"))
            self.dev_texts.extend(u.text for u in dev)
        print(f"train: {len(self.train_texts)} utterances x {len(self.args.speeds)} speeds, dev: {len(self.dev)}")

    def resume(self):
        checkpoint = torch.load(self.out / "checkpoint.pt", map_location=self.device, weights_only=False)
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.state = checkpoint["state"]
        print(f"resumed at epoch {self.state['epoch']} batch {self.state['batch']}")

    def save_checkpoint(self):
        self.out.mkdir(parents=True, exist_ok=True)
        payload = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                   "state": self.state, "args": vars(self.args)}
        torch.save(payload, self.out / "checkpoint.tmp")
        (self.out / "checkpoint.tmp").replace(self.out / "checkpoint.pt")

    def learning_rate(self, step: int, total: int) -> float:
        warmup = self.args.warmup
        if step < warmup:
            return self.args.lr * (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return self.args.lr * (0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * progress)))

    def batches(self, epoch: int):
        """Length-bucketed batches in random order; shortest first in the first epoch (SortaGrad),
        which gets CTC past its all-blank plateau sooner."""
        rng = np.random.default_rng(self.args.seed + epoch)
        lengths = [len(f) for f in self.train[1.0]]
        batches = length_batches(lengths, self.args.batch_frames, rng)
        if epoch == 0:
            batches.sort(key=lambda batch: max(lengths[i] for i in batch))
        return batches, rng

    def train_step(self, indices, rng, total_steps):
        speeds = self.args.speeds
        features = [self.train[speeds[int(rng.integers(len(speeds)))]][i] for i in indices]
        texts = [self.train_texts[i] for i in indices]
        padded, lengths, targets, target_lengths = collate(features, texts, self.device)
        if self.args.spec_augment:
            padded = spec_augment(padded, self.model.mean, rng)
        log_probs, _ = self.model(padded)
        out_lengths = lengths // self.model.config.stack
        loss = torch.nn.functional.ctc_loss(log_probs.transpose(0, 1), targets, out_lengths, target_lengths,
                                            blank=BLANK, zero_infinity=True)
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate(self.state["step"], total_steps)
        self.optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 5.0)
        self.optimizer.step()
        self.state["step"] += 1
        return loss.item()

    def run(self):
        log = TrainingLog(self.out, "am")
        started, last_save = time.time(), time.time()
        batches_per_epoch = len(self.batches(0)[0])
        total_steps = batches_per_epoch * self.args.epochs
        while self.state["epoch"] < self.args.epochs:
            batches, rng = self.batches(self.state["epoch"])
            losses = []
            with log.epoch(self.state["epoch"], len(batches), self.state["batch"]) as advance:
                for indices in batches[self.state["batch"]:]:
                    losses.append(self.train_step(indices, rng, total_steps))
                    self.state["batch"] += 1
                    advance(losses[-1])
                    if time.time() - last_save > self.args.save_minutes * 60:
                        self.save_checkpoint()
                        last_save = time.time()
                    if self.args.max_minutes and time.time() - started > self.args.max_minutes * 60:
                        self.save_checkpoint()
                        print("time budget reached; resume with --resume")
                        return
            if self.end_epoch(float(np.mean(losses)) if losses else float("nan"), log):
                break

    def end_epoch(self, train_loss: float, log) -> bool:
        wer = dev_wer(self.model, self.dev, self.dev_texts, self.device)
        self.state["history"].append({"epoch": self.state["epoch"], "train_loss": train_loss, "dev_wer": wer})
        log.record(self.state["history"])
        self.state["epoch"] += 1
        self.state["batch"] = 0
        if wer < self.state["best_wer"]:
            self.state["best_wer"], self.state["bad_epochs"] = wer, 0
            meta = {"dev_wer_greedy": wer, "epoch": self.state["epoch"], "manifests": self.args.manifests}
            save_model(self.model, "acoustic", self.out / "am.pt", meta=meta)
        else:
            self.state["bad_epochs"] += 1
        self.save_checkpoint()
        return self.state["bad_epochs"] >= self.args.patience


def add_arguments(parser):
    parser.add_argument("manifests", nargs="+", help="JSONL manifests, optionally PATH:WEIGHT")
    parser.add_argument("--out", default="runs/am", help="directory for checkpoints and am.pt")
    parser.add_argument("--cache", default="cache/features", help="feature cache directory")
    parser.add_argument("--rnn", choices=["lstm", "gru"], default="lstm")
    parser.add_argument("--hidden", type=int, default=AcousticConfig.hidden)
    parser.add_argument("--layers", type=int, default=AcousticConfig.layers)
    parser.add_argument("--stack", type=int, default=AcousticConfig.stack, help="frames per RNN step (subsampling)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--lr", type=float, default=1.5e-3)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--batch-frames", type=int, default=10000)
    parser.add_argument("--speeds", type=float, nargs="+", default=[0.9, 1.0, 1.1])
    parser.add_argument("--no-spec-augment", dest="spec_augment", action="store_false",
                        help="train without SpecAugment masks (faster fitting while the model underfits)")
    parser.add_argument("--patience", type=int, default=4, help="epochs without dev WER gain before stopping")
    parser.add_argument("--save-minutes", type=float, default=5.0)
    parser.add_argument("--max-minutes", type=float, default=0.0, help="stop (resumably) after this long")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--seed", type=int, default=0)


def main(args) -> None:
    if 1.0 not in args.speeds:
        args.speeds = [1.0] + list(args.speeds)
    Trainer(args).run()
