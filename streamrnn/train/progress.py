"""Training progress: a rich progress bar on a terminal, log lines otherwise,
and a history file with a learning-curve PNG beside the checkpoint."""
from __future__ import annotations

import json
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class TrainingLog:
    def __init__(self, out: Path, name: str, log_every: int = 50):
        self.out, self.name, self.log_every = Path(out), name, log_every
        self.out.mkdir(parents=True, exist_ok=True)

    @contextmanager
    def epoch(self, epoch: int, total: int, done: int):
        if sys.stdout.isatty():
            with Progress(TextColumn(f"{self.name} epoch {epoch}"), BarColumn(), MofNCompleteColumn(),
                          TextColumn("loss {task.fields[loss]:.3f}"), TimeElapsedColumn(),
                          TimeRemainingColumn()) as progress:
                task = progress.add_task("train", total=total, completed=done, loss=float("nan"))
                yield lambda loss: progress.update(task, advance=1, loss=loss)
            return
        started, count = time.time(), [done]

        def advance(loss: float) -> None:
            count[0] += 1
            if count[0] % self.log_every == 0 or count[0] == total:
                rate = (count[0] - done) / max(time.time() - started, 1e-6)
                eta = (total - count[0]) / max(rate, 1e-6)
                print(f"{self.name} epoch {epoch} batch {count[0]}/{total} loss {loss:.3f} "
                      f"eta {eta / 60:.1f} min", flush=True)
        yield advance

    def record(self, history: list[dict]) -> None:
        print(f"{self.name} " + " ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                         for k, v in history[-1].items()), flush=True)
        (self.out / "history.json").write_text(json.dumps(history, indent=1))
        plot_curve(history, self.out / "learning_curve.png")


def plot_curve(history: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    metrics = [k for k in history[0] if k != "epoch"]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3))
    for axis, metric in zip(axes if len(metrics) > 1 else [axes], metrics):
        axis.plot(epochs, [h[metric] for h in history], marker="o")
        axis.set_title(metric)
        axis.set_xlabel("epoch")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
