"""`streamrnn train am`: CTC training of the acoustic model on manifests and LibriSpeech folders."""
from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

import numpy as np
import torch

from streamrnn.acoustic import AcousticConfig, AcousticModel
from streamrnn.checkpoint import SaveClock, load_model, load_training_state, save_model, save_training_state
from streamrnn.config import NOISE_TYPES, Augmentation, load_config, model_path
from streamrnn.targets import TARGET_KINDS, CharInventory, greedy_ids, make_inventory
from streamrnn.tokens import BLANK
from streamrnn.train.features import augmented_features, cached_features, length_batches, normalization_stats
from streamrnn.train.progress import TrainingLog
from streamrnn.train.sources import epoch_order, load_source


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


def collate(features: list[torch.Tensor], texts: list[list[int]], fill: torch.Tensor, device):
    """Padded with `fill` (the feature mean, zero after CMVN): the future a lookahead model sees
    past the end of the audio when it streams."""
    lengths = torch.tensor([len(f) for f in features])
    padded = fill.cpu().expand(len(features), int(lengths.max()), len(fill)).clone()
    for row, f in zip(padded, features):
        row[:len(f)] = f
    targets = torch.tensor([t for text in texts for t in text], dtype=torch.long)
    target_lengths = torch.tensor([len(t) for t in texts])
    return padded.to(device), lengths, targets, target_lengths


@torch.no_grad()
def dev_error(model: AcousticModel, features, references, inventory, device) -> float:
    """Greedy dev error rate: WER for a character model, PER for a phone model."""
    model.eval()
    hypotheses = []
    for f in features:
        log_probs, _ = model(f.float()[None].to(device))
        hypotheses.append(greedy_ids(log_probs[0].cpu()))
    model.train()
    return inventory.error_rate(zip(references, hypotheses))


def widen_lookahead(model: AcousticModel, lookahead: int) -> None:
    """Gives a trained model more lookahead: the new future steps' input weights start at zero, so
    it computes what it did before until training teaches it to use them."""
    old, added = model.project, lookahead - model.config.lookahead
    if added < 0:
        raise ValueError(f"--lookahead {lookahead} is less than the --init model's {model.config.lookahead}")
    step_width = old.in_features // (1 + model.config.lookahead)
    model.project = torch.nn.Linear(old.in_features + added * step_width, old.out_features)
    with torch.no_grad():
        model.project.weight.zero_()
        model.project.weight[:, :old.in_features] = old.weight
        model.project.bias.copy_(old.bias)
    model.config.lookahead = lookahead


class Trainer:
    def __init__(self, args):
        self.args = args
        self.out = Path(args.out)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.rng = np.random.default_rng(args.seed)
        self.augmentation = Augmentation.from_config(args)
        self.inventory = make_inventory(args.targets, args.phone_boundary, args.oov_words == "guess")
        self.load_data()
        self.model = (self.initial_model() if args.init else self.new_model()).to(self.device)
        self.model.train()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=args.lr, weight_decay=1e-2)
        self.state = {"epoch": 0, "batch": 0, "step": 0, "best": 1e9, "bad_epochs": 0, "history": []}
        if args.resume and (self.out / "checkpoint.pt").exists():
            self.resume()

    def new_model(self) -> AcousticModel:
        args, tokens = self.args, list(self.inventory.tokens)
        model = AcousticModel(AcousticConfig(rnn=args.rnn, hidden=args.hidden, layers=args.layers, stack=args.stack,
                                             dropout=args.dropout, vocab=len(tokens), targets=self.inventory.kind,
                                             tokens=tokens, lookahead=args.lookahead or 0))
        model.set_normalization(*normalization_stats(self.train[1.0]))
        return model

    def initial_model(self) -> AcousticModel:
        """--init: a trained model to go on from (fine-tuning): its size, weights and feature
        normalisation; --rnn, --hidden, --layers, --stack and --dropout are then its own."""
        model = load_model("acoustic", model_path(self.args.init, "am.pt"))
        if tuple(model.config.tokens or CharInventory.tokens) != tuple(self.inventory.tokens):
            raise ValueError(f"--init {self.args.init} emits {model.config.targets}, not --targets {self.args.targets}")
        model.config.tokens = list(self.inventory.tokens)
        if self.args.lookahead is not None and self.args.lookahead != model.config.lookahead:
            widen_lookahead(model, self.args.lookahead)
        print(f"init: {self.args.init} ({model.config.rnn} {model.config.layers} x {model.config.hidden}, "
              f"lookahead {model.config.lookahead})")
        return model

    def load_data(self):
        cache, args = Path(self.args.cache), self.args
        self.sources = [load_source(spec) for spec in args.manifests]
        self.train = {speed: [] for speed in args.speeds}
        self.augmented = [[] for _ in range(args.augmented_copies)] if self.augmentation.active else []
        self.train_texts, self.dev, self.dev_refs = [], [], []
        for source in self.sources:
            name = f"{source.name}-train"
            for speed in args.speeds:
                self.train[speed].extend(cached_features(source.train, speed, cache, name))
            for copy, variants in enumerate(self.augmented):
                variants.extend(augmented_features(source.train, self.augmentation, args.speeds, copy, args.seed,
                                                   cache, name))
            self.train_texts.extend(self.targets_of(source, "train"))
            dev = cached_features(source.dev, 1.0, cache, f"{source.name}-dev")
            references = [self.inventory.reference(u.text) for u in source.dev]
            kept = [i for i, reference in enumerate(references) if reference is not None]
            self.dev.extend(dev[i] for i in kept)
            self.dev_refs.extend(references[i] for i in kept)
        self.usable = [i for i, text in enumerate(self.train_texts) if text is not None]
        if not self.usable:
            raise ValueError("no training utterances in " + " ".join(args.manifests))
        if not self.dev:
            raise ValueError("no dev utterances in " + " ".join(args.manifests) + ": add a source with a dev "
                             "split (e.g. librispeech-mini.jsonl) to choose the best epoch by")
        weights = ", ".join(f"{s.name} {len(s.train)} x{s.weight:g}" for s in self.sources)
        print(f"train: {weights}; {len(args.speeds)} speeds, {len(self.augmented)} augmented copies; "
              f"dev: {len(self.dev)}; targets: {self.inventory.kind} ({len(self.inventory.tokens)} tokens)")

    def targets_of(self, source, split: str) -> list:
        """Target ids of a source's utterances; None for one whose transcript has a word without a
        pronunciation (phone targets), which training then leaves out. Says how many."""
        utterances = getattr(source, split)
        targets = [self.inventory.encode(u.text) for u in utterances]
        dropped = [u for u, t in zip(utterances, targets) if t is None]
        if dropped:
            words = sorted({w for u in dropped for w in self.inventory.missing(u.text)})
            hours = sum(u.duration for u in dropped) / 3600
            print(f"{source.name} {split}: {len(dropped)} of {len(utterances)} utterances ({hours:.2f} h) left out "
                  f"for {len(words)} words without a pronunciation, e.g. {' '.join(words[:8])}")
        return targets

    def resume(self):
        saved = torch.load(self.out / "checkpoint.pt", map_location="cpu", weights_only=False)["args"]
        if saved.get("oov_words") == "flite":  # runs from before the G2P model guessed with flite's t2p
            saved["oov_words"] = "guess"
        for key in ("targets", "phone_boundary", "oov_words", "lookahead"):
            if key in saved and saved[key] != getattr(self.args, key):
                raise ValueError(f"{self.out}/checkpoint.pt was trained with --{key.replace('_', '-')} "
                                 f"{saved[key]}, not {getattr(self.args, key)}: resume with the same, or a new --out")
        self.state = load_training_state(self.out / "checkpoint.pt", self.model, self.optimizer, self.device)
        if "best_wer" in self.state:  # runs saved before the dev metric could be PER
            self.state["best"] = self.state.pop("best_wer")
        print(f"resumed at epoch {self.state['epoch']} batch {self.state['batch']}")

    def save_checkpoint(self):
        save_training_state(self.out / "checkpoint.pt", self.model, self.optimizer, self.state, self.args)

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
        usable = set(self.usable)
        order = [i for i in epoch_order(self.sources, self.args.seed, epoch) if i in usable]
        lengths = [len(self.train[1.0][i]) for i in order]
        batches = length_batches(lengths, self.args.batch_frames, rng)
        if epoch == 0:
            batches.sort(key=lambda batch: max(lengths[i] for i in batch))
        return [[order[i] for i in batch] for batch in batches], rng

    def example(self, index: int, rng: np.random.Generator) -> torch.Tensor:
        """Features of one training utterance: a random augmented copy when augmenting, else a
        random speed. A copy that drew no noise or reverberation names the clean speed to use."""
        if self.augmented:
            variant = self.augmented[int(rng.integers(len(self.augmented)))][index]
            return variant if isinstance(variant, torch.Tensor) else self.train[variant][index]
        speeds = self.args.speeds
        return self.train[speeds[int(rng.integers(len(speeds)))]][index]

    def train_step(self, indices, rng, total_steps):
        features = [self.example(i, rng) for i in indices]
        texts = [self.train_texts[i] for i in indices]
        padded, lengths, targets, target_lengths = collate(features, texts, self.model.mean, self.device)
        if self.args.spec_augment:
            padded = spec_augment(padded, self.model.mean, rng)
        autocast = torch.autocast(self.device, dtype=torch.bfloat16) if self.args.bf16 else contextlib.nullcontext()
        with autocast:
            log_probs, _ = self.model(padded)
        out_lengths = lengths // self.model.config.stack
        loss = torch.nn.functional.ctc_loss(log_probs.float().transpose(0, 1), targets, out_lengths, target_lengths,
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
        clock = SaveClock(self.args.save_minutes, self.args.max_minutes)
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
                    if clock.tick(self.save_checkpoint):
                        return
            if self.end_epoch(float(np.mean(losses)) if losses else float("nan"), log):
                break

    def end_epoch(self, train_loss: float, log) -> bool:
        error = dev_error(self.model, self.dev, self.dev_refs, self.inventory, self.device)
        metric = self.inventory.metric
        self.state["history"].append({"epoch": self.state["epoch"], "train_loss": train_loss, metric: error})
        log.record(self.state["history"])
        self.state["epoch"] += 1
        self.state["batch"] = 0
        if error < self.state["best"]:
            self.state["best"], self.state["bad_epochs"] = error, 0
            meta = {f"{metric}_greedy": error, "epoch": self.state["epoch"], "manifests": self.args.manifests,
                    "targets": self.inventory.kind}
            if self.inventory.kind == "phones":
                meta.update(lexicon="CMUdict (pocketsphinx cmudict-en-us.dict), stress removed",
                            oov_words=self.args.oov_words)
            save_model(self.model, "acoustic", self.out / "am.pt", meta=meta)
        else:
            self.state["bad_epochs"] += 1
        self.keep_epoch(error)
        self.save_checkpoint()
        return self.state["bad_epochs"] >= self.args.patience

    def keep_epoch(self, error: float) -> None:
        """The epoch just trained, as history.json numbers it, in epochs/ for `streamrnn train
        average`; only the newest --keep-epochs stay."""
        if self.args.keep_epochs < 1:
            return
        epoch, folder = self.state["epoch"] - 1, self.out / "epochs"
        save_model(self.model, "acoustic", folder / f"epoch-{epoch:03d}.pt",
                   meta={f"{self.inventory.metric}_greedy": error, "epoch": epoch})
        for old in sorted(folder.glob("epoch-*.pt"))[:-self.args.keep_epochs]:
            old.unlink()


def add_arguments(parser):
    parser.add_argument("manifests", nargs="+", metavar="SOURCE",
                        help="PATH.jsonl or librispeech:ROOT:SUBSET, each optionally :WEIGHT (times per epoch)")
    parser.add_argument("--out", default="runs/am", help="directory for checkpoints and am.pt")
    parser.add_argument("--cache", default="cache/features", help="feature cache directory")
    parser.add_argument("--rnn", choices=["lstm", "gru"], default="lstm")
    parser.add_argument("--hidden", type=int, default=AcousticConfig.hidden)
    parser.add_argument("--layers", type=int, default=AcousticConfig.layers)
    parser.add_argument("--dropout", type=float, default=AcousticConfig.dropout, help="between RNN layers")
    parser.add_argument("--stack", type=int, default=AcousticConfig.stack, help="frames per RNN step (subsampling)")
    parser.add_argument("--lookahead", type=int, metavar="STEPS",
                        help="future steps each step sees (default 0; with --init, the model's own): adds "
                             "STEPS x stack x 10 ms of delay to every partial, e.g. 4 steps of 3 frames = 120 ms")
    parser.add_argument("--targets", choices=TARGET_KINDS, default="chars",
                        help="what the model emits: characters, or CMUdict phones (dev metric: greedy PER)")
    parser.add_argument("--phone-boundary", action=argparse.BooleanOptionalAction, default=True,
                        help="phones: a word-boundary token '|' between words (the lexicon search's separator)")
    parser.add_argument("--oov-words", choices=["guess", "drop"], default="guess",
                        help="phones: a word not in CMUdict gets the G2P model's guessed pronunciation, or its "
                             "utterance is left out")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast for the forward pass")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--lr", type=float, default=1.5e-3)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--batch-frames", type=int, default=10000)
    augment = parser.add_argument_group("data augmentation (defaults from the config's [training])")
    augment.add_argument("--speeds", type=float, nargs="+", help="speed perturbation factors")
    augment.add_argument("--spec-augment", action=argparse.BooleanOptionalAction,
                         help="SpecAugment masks; --no-spec-augment fits faster while the model underfits")
    augment.add_argument("--noise-probability", type=float, help="chance an example gets added noise")
    augment.add_argument("--noise-types", nargs="+", choices=NOISE_TYPES)
    augment.add_argument("--noise-snr-db", type=float, nargs=2, metavar=("LOW", "HIGH"))
    augment.add_argument("--reverb-probability", type=float, help="chance an example gets room reverberation")
    augment.add_argument("--reverb-rt60-s", type=float, nargs=2, metavar=("LOW", "HIGH"))
    augment.add_argument("--augmented-copies", type=int, help="augmented versions of each utterance, cached")
    augment.add_argument("--synthetic", help="a manifest made by `streamrnn synth`, added as a source")
    augment.add_argument("--synthetic-weight", type=float)
    parser.add_argument("--patience", type=int, default=4,
                        help="epochs without dev WER (phones: PER) gain before stopping")
    parser.add_argument("--save-minutes", type=float, default=5.0)
    parser.add_argument("--keep-epochs", type=int, default=5, metavar="N",
                        help="keep the last N epochs' models in OUT/epochs, to average with `train average`")
    parser.add_argument("--max-minutes", type=float, default=0.0, help="stop (resumably) after this long")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--init", metavar="MODEL",
                        help="start from this acoustic model's weights (\"builtin\": the shipped one), to "
                             "fine-tune it on your own speech; its size replaces --rnn/--hidden/--layers/--stack")
    parser.add_argument("--seed", type=int, default=0)


def apply_config(args) -> None:
    """Fills each augmentation option not given on the command line from the config."""
    training = load_config(args.config).training
    for key, value in vars(training).items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    args.speeds = [float(speed) for speed in args.speeds]
    if 1.0 not in args.speeds:
        args.speeds = [1.0] + args.speeds
    if args.augmented_copies < 1:
        raise ValueError(f"--augmented-copies must be at least 1, got {args.augmented_copies}")
    if args.synthetic:
        args.manifests = list(args.manifests) + [f"{args.synthetic}:{args.synthetic_weight}"]


def main(args) -> None:
    apply_config(args)
    Trainer(args).run()
