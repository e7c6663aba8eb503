"""Collect ``benchmarks/results/mscmr_*.json`` into ``docs/results.md`` tables and a learning-curve
PNG (validation mean Dice against wall-clock minutes).

    python benchmarks/report.py          # needs the [bench] extra (matplotlib)
"""

from __future__ import annotations

import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
#: mean test Dice reported in the paper (docs of the method), for the few-scribble setting.
PAPER_FEW5 = {("pce", "unet"): 0.157, ("medcl", "unet"): 0.832, ("medcl", "lite_medsam"): 0.805}
CLASSES = ("RV", "Myo", "LV")


def load() -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(RESULTS.glob("mscmr_*.json"))]


def row(r: dict) -> str:
    mean, std = r["test_mean"], r["test_std"]
    dice = " | ".join(f"{mean[c]['dice']:.3f} ± {std[c]['dice']:.3f}" for c in CLASSES)
    hd = " | ".join(f"{mean[c]['hd95']:.1f}" for c in CLASSES)
    model = r["config"].get("model", "unet")
    paper = PAPER_FEW5.get((r["method"], model)) if r["setting"] == "few5" else None
    cfg = r["config"]
    flags = ", ".join([f for f in ("nonzero_mask",) if cfg.get(f)]
                      + ([f"labelled_fraction {cfg['labelled_fraction']}"]
                         if r["method"] != "pce" and cfg.get("labelled_fraction") == 1.0
                         else [])
                      + ([f"dice_weight {cfg['dice_weight']}"]
                         if r["method"] == "pce" and cfg.get("dice_weight") else [])
                      + ([f"supervised_warmup {cfg['supervised_warmup']}"]
                         if cfg.get("supervised_warmup") else [])
                      + ([cfg["precision"]] if cfg.get("precision") != "bf16" else [])
                      + ([f"stops at {cfg['iterations']} steps"]
                         if cfg.get("iterations", 0) < 100_000 else [])
                      + [f"batch {cfg['batch_size']}", f"{r.get('threads', 2)} thr"])
    return (f"| {r['method']} | {model} | {r['setting']} | {flags} | {r['budget_minutes']:g} | {r['steps']} | "
            f"{r['best_val_mean_dice']:.3f} | {dice} | **{r['test_mean_foreground_dice']:.3f}** | "
            f"{'' if paper is None else f'{paper:.3f}'} | {hd} | {r['commit'][:10]} |")


def table(results: list[dict]) -> str:
    head = ("| method | model | setting | options | budget (min) | steps | best val Dice | test Dice RV | Myo | LV | "
            "**test mean Dice** | paper | HD95 RV (mm) | Myo | LV | commit |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    return "\n".join([head] + [row(r) for r in results])


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5.5))
    # time-budgeted rows only (rows stopped by a step count are precision checks)
    timed = [r for r in results if r["config"].get("iterations", 0) >= 100_000]
    colours = plt.get_cmap("tab20").colors
    for i, r in enumerate(timed):
        curve = [(m, d) for m, d in r["val_curve_minutes_dice"] if d is not None]
        ax.plot([m for m, _ in curve], [d for _, d in curve], marker="o", ms=3,
                color=colours[i % len(colours)],
                label=f"{r['method']} {r['config'].get('model', 'unet')} ({r['setting']}, "
                      f"{r['budget_minutes']:g} min, {r.get('threads', 2)} thr"
                      f"{', nonzero mask' if r['config'].get('nonzero_mask') else ''}"
                      f"{', warm-up' if r['config'].get('supervised_warmup') else ''}"
                      f"{', + Dice' if r['method'] == 'pce' and r['config'].get('dice_weight') else ''})")
    ax.set_xlabel("wall-clock training minutes (2-core CPU; thr = torch threads of the run)")
    ax.set_ylabel("validation mean 3D Dice (5 volumes)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    results = load()
    print(table(results))
    plot(results, REPO / "docs" / "learning_curves.png")
    for r in results:
        print(f"- `{r['name']}`: `{r['command']}` (commit {r['commit']}, started {r['started']}, "
              f"training {r['train_wall_s'] / 60:.1f} min wall, {r['train_source_slices_per_s_median']} "
              f"source slices/s median, test prediction {r['test_predict_wall_s']} s for 15 volumes"
              + (f", peak RSS {r['peak_rss_gib']} GiB" if "peak_rss_gib" in r else "") + ")")


if __name__ == "__main__":
    main()
