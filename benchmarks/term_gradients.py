"""Which MedCL loss terms help or hurt each class, measured by gradient alignment.

For a trained checkpoint and a few MedCL training batches (few-scribble MSCMR, as in training),
each loss term ``t`` gives a parameter gradient ``g_t``. For each class ``c``, ``J_c`` is the
gradient of the mean log-probability of class ``c`` on *held-out scribbles*: the scribbles of
the 20 training volumes that the few-scribble setting hides (never used for supervision, and not
the validation or test labels). A gradient-descent step along ``-g_t`` changes that
log-probability by about ``-lr * g_t . J_c`` to first order, so

* ``cos(-g_t, J_c) > 0``: the term, alone, raises class ``c``'s probability where ``c`` is;
* ``cos < 0``: it lowers it.

    python benchmarks/term_gradients.py --checkpoint RUN/checkpoints/best.pt --batches 4

Writes ``benchmarks/results/term_gradients_<name>.json`` and prints a table. A diagnostic, not a
benchmark: it reads one model at one point of training.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MEDCL_DATA", REPO.parent / "shared" / "data")) / "MSCMR_dataset"
LABELS = REPO / "examples" / "mscmr.json"


def flat_grad(value: torch.Tensor, params: list[torch.Tensor]) -> torch.Tensor:
    grads = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).flatten()
                      for g, p in zip(grads, params)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--name", required=True, help="result name")
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--crop-size", type=int, default=192)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--options", help="JSON object of TrainConfig options for the objective")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "src"))
    from medcl.data.slices import SliceSampler
    from medcl.runtime.checkpoint import load_checkpoint
    from medcl.training.config import TrainConfig
    from medcl.training.data import load_training_data
    from medcl.training.trainer import Trainer

    torch.set_num_threads(args.threads)
    common = dict(data=str(DATA), labels=str(LABELS), target_spacing=1.36719,
                  batch_size=args.batch_size, crop_size=args.crop_size, device="cpu",
                  **(json.loads(args.options) if args.options else {}))
    cfg = TrainConfig(method="medcl", num_scribbled=5, **common)
    data, cfg = load_training_data(cfg)
    trainer = Trainer(cfg, data, Path("/tmp") / f"term_gradients_{args.name}")
    ckpt = load_checkpoint(args.checkpoint)
    trainer.model.load_state_dict(ckpt["model"])
    if ckpt.get("config", {}).get("method") not in (None, "pce"):
        trainer.objective.load_state_dict(ckpt["objective"])
    scribbled = {c.case_id for c in data.train if c.labelled}
    full, _ = load_training_data(TrainConfig(method="pce", **common))
    hidden = [c for c in full.train if c.case_id not in scribbled]
    spec = data.spec
    held_out = SliceSampler(hidden, crop_size=(args.crop_size,) * 2,
                            ignore_index=spec.ignore_index, labelled_fraction=1.0,
                            generator=torch.Generator().manual_seed(7))
    model, network, objective = trainer.model, trainer.network, trainer.objective
    params = [p for p in model.parameters() if p.requires_grad]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    classes = list(spec.class_names)
    sums: dict[str, dict[str, float]] = {}
    for b in range(args.batches):
        model.eval()  # the deployed function: running batch-norm statistics
        probe = held_out.sample(args.batch_size)
        log_probs = network(probe["image"]).log_softmax(1)
        targets = {}
        for c, name in enumerate(classes):
            mask = probe["labels"] == c
            if mask.any():
                targets[name] = flat_grad(log_probs[:, c][mask].mean(), params)
        model.train()
        terms = objective.terms(network, trainer.next_batch(), trainer.step_generator)
        total = sum(objective.weights[n] * v for n, v in terms.items())
        for term, value in {**terms, "total (weighted)": total}.items():
            g = -flat_grad(value, params)
            row = sums.setdefault(term, {})
            for name, j in targets.items():
                cos = (g @ j / (g.norm() * j.norm()).clamp(min=1e-12)).item()
                row[name] = row.get(name, 0.0) + cos / args.batches
            row["grad_norm"] = row.get("grad_norm", 0.0) + g.norm().item() / args.batches
            row["value"] = row.get("value", 0.0) + float(value) / args.batches
        with torch.no_grad():  # undo that forward's update of the running statistics
            model.load_state_dict(state)
        print(f"batch {b + 1}/{args.batches} done", file=sys.stderr, flush=True)
    header = ["term", "value", "grad_norm"] + classes
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for term, row in sums.items():
        lines.append("| " + " | ".join([term] + [f"{row.get(h, float('nan')):+.3f}"
                                                 for h in header[1:]]) + " |")
    print("\n".join(lines))
    out = REPO / "benchmarks" / "results" / f"term_gradients_{args.name}.json"
    out.write_text(json.dumps({"command": " ".join(["python"] + sys.argv),
                               "checkpoint": args.checkpoint, "step": ckpt.get("step"),
                               "cosine_with_held_out_log_prob": sums}, indent=1) + "\n")


if __name__ == "__main__":
    main()
