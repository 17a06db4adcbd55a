"""`streamrnn train average`: one acoustic model whose weights are the mean of several checkpoints
of one run, such as the last epochs `train am` keeps in its epochs/ folder. The mean of the end of
a run often generalises better than any one checkpoint of it."""
from __future__ import annotations

import torch

from streamrnn.checkpoint import load_model, save_model


def add_arguments(parser) -> None:
    parser.add_argument("models", nargs="+", metavar="MODEL", help="acoustic model files of one run")
    parser.add_argument("--out", required=True, metavar="FILE", help="the averaged model to write")


def average_models(paths: list[str]):
    """The first model, its weights replaced by the mean of all the models' weights."""
    models = [load_model("acoustic", path) for path in paths]
    first = models[0]
    for path, model in zip(paths[1:], models[1:]):
        if vars(model.config) != vars(first.config):
            raise ValueError(f"{path} is not the same kind of model as {paths[0]} (their configs differ): "
                             "only checkpoints of one run can be averaged")
    states = [model.state_dict() for model in models]
    with torch.no_grad():
        for name, tensor in states[0].items():
            if tensor.is_floating_point():
                tensor.copy_(torch.stack([state[name] for state in states]).mean(0))
    return first


def main(args) -> None:
    model = average_models(args.models)
    save_model(model, "acoustic", args.out, meta={**model.meta, "averaged": [str(p) for p in args.models]})
    print(f"wrote {args.out}: the mean of {len(args.models)} models")
