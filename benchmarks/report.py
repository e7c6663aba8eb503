"""Collect ``benchmarks/results/{mscmr,myops}_*.json`` into ``docs/results.md`` tables (one row per
run, and mean +- std over seeds) and ``docs/learning_curves.png`` (one panel per comparison:
validation mean Dice against wall-clock minutes, mean of the seeds with a +-1 std band).

    python benchmarks/report.py          # needs the [bench] extra (matplotlib)
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from seeds import aggregate, row_name

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
#: mean test Dice reported in the paper (docs of the method), for the few-scribble setting.
PAPER_FEW5 = {("pce", "unet"): 0.157, ("medcl", "unet"): 0.832, ("medcl", "lite_medsam"): 0.805}
CLASSES = ("RV", "Myo", "LV")


def load() -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(RESULTS.glob("mscmr_*.json"))]


def kernel_path(machine) -> str | None:
    """``"AVX2"`` from a record's machine line (``"... torch kernels AVX2"``); None if absent."""
    if isinstance(machine, str) and "torch kernels " in machine:
        return machine.rsplit("torch kernels ", 1)[1].strip()
    return None


def row(r: dict) -> str:
    mean, std = r["test_mean"], r["test_std"]
    dice = " | ".join(f"{mean[c]['dice']:.3f} ± {std[c]['dice']:.3f}" for c in CLASSES)
    hd = " | ".join(f"{mean[c]['hd95']:.1f}" for c in CLASSES)
    model = r["config"].get("model", "unet")
    paper = PAPER_FEW5.get((r["method"], model)) if r["setting"] == "few5" else None
    cfg = r["config"]
    flags = ", ".join([f for f in ("nonzero_mask",) if cfg.get(f)]
                      + (["mask detected"] if r["method"] == "recommended" else [])
                      + ([f"labelled_fraction {cfg['labelled_fraction']}"]
                         if r["method"] != "pce" and cfg.get("labelled_fraction") == 1.0
                         else [])
                      + ([f"dice_weight {cfg['dice_weight']}"]
                         if r["method"] == "pce" and cfg.get("dice_weight") else [])
                      + ([f"supervised_warmup {cfg['supervised_warmup']}"]
                         if cfg.get("supervised_warmup") else [])
                      + ([f"precision {cfg['precision']}"] if cfg.get("precision") != "bf16"
                         else [])
                      + ([f"{kernel_path(r['machine'])} CPU"] if kernel_path(r.get("machine"))
                         else [])
                      + ([f"stops at {cfg['iterations']} steps"]
                         if cfg.get("iterations", 0) < 100_000 else [])
                      + [f"batch {cfg['batch_size']}", f"{r.get('threads', 2)} thr"])
    return (f"| {r['method']} | {model} | {r['setting']} | {flags} | {r['budget_minutes']:g} | "
            f"{r['steps']} | "
            f"{r['best_val_mean_dice']:.3f} | {dice} | **{r['test_mean_foreground_dice']:.3f}**"
            + (f" (raw {r['test_raw_mean_foreground_dice']:.3f})"
               if "test_raw_mean_foreground_dice" in r else "") + " | "
            f"{'' if paper is None else f'{paper:.3f}'} | {hd} | {r['commit'][:10]} |")


def table(results: list[dict]) -> str:
    head = ("| method | model | setting | options | budget (min) | steps | best val Dice | "
            "test Dice RV | Myo | LV | **test mean Dice** | paper | HD95 RV (mm) | Myo | LV | "
            "commit |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    return "\n".join([head] + [row(r) for r in results])


#: the panels of docs/learning_curves.png: title -> the rows compared (result names without
#: ``_seed<N>``); a row with several seeds is drawn as its mean curve with a +-1 std band
COMPARISONS = {
    "UNet, 30 min: pCE + scribble Dice vs MedCL vs recommended": (
        "mscmr_few5_pce_dice_fov_30min", "mscmr_few5_medcl_30min",
        "mscmr_few5_recommended_30min", "mscmr_few5_medcl_warm30_fov_30min"),
    "UNet, AVX2 CPU, fp32 (sessions 6-9): pCE + scribble Dice vs MedCL vs recommended": (
        "mscmr_few5_pce_dice_fov_avx2_30min", "mscmr_few5_medcl_avx2_30min",
        "mscmr_few5_recommended_avx2_30min", "mscmr_few5_recommended_avx2_60min"),
    # one AMX Xeon model (bf16, sessions 15-20; sessions 19-20 ran about 1.5x faster)
    "UNet, AMX CPU, bf16: pCE + scribble Dice 60 min vs recommended 30 / 60 / 120 min": (
        "mscmr_few5_pce_dice_fov_amx_60min", "mscmr_few5_recommended_amx_30min",
        "mscmr_few5_recommended_amx_60min", "mscmr_few5_recommended_ramp30_amx_60min",
        "mscmr_few5_recommended_amx_120min"),
    "UNet, 30 min: MedCL's parts (paper presets, no mask)": (
        "mscmr_few5_pce_30min", "mscmr_few5_mix_30min", "mscmr_few5_cluster_30min",
        "mscmr_few5_medcl_30min", "mscmr_few5_medcl_60min"),
    "LiteMedSAM, 30 min: pCE-SAM vs MedCL-SAM (before the encoder fix of 38d7463)": (
        "mscmr_few5_pce_lite_medsam_30min", "mscmr_few5_medcl_lite_medsam_30min",
        "mscmr_few5_pce_lite_medsam_sam12_30min", "mscmr_few5_medcl_lite_medsam_sam12_30min",
        "mscmr_few5_medcl_lite_medsam_sam12_60min"),
    # sessions 12-13 on a Zen 4 EPYC; MedCL-SAM seed 44 and the sam14 row on session 14's Xeon
    "LiteMedSAM after the encoder fix (bf16; seed 44 and sam14: another CPU)": (
        "mscmr_few5_pce_lite_medsam_sam12_evalfix_30min",
        "mscmr_few5_pce_lite_medsam_sam14_12min",
        "mscmr_few5_medcl_lite_medsam_sam12_evalfix_30min",
        "mscmr_few5_recommended_lite_medsam_sam12_evalfix_30min",
        "mscmr_few5_medcl_lite_medsam_sam12_evalfix_60min"),
    # one AMX Xeon model (bf16, sessions 17-18): equal wall-clock on one machine
    "LiteMedSAM, AMX CPU, bf16, 30 min: pCE-SAM vs recommended + MedCL ramp-up": (
        "mscmr_few5_pce_lite_medsam_amx_30min",
        "mscmr_few5_recommended_lite_medsam_ramp30_amx_30min"),
}
#: points of the common minute grid the seeds of a row are interpolated onto
CURVE_POINTS = 100


def by_row(results: list[dict]) -> dict[str, list[dict]]:
    """Group result records by row (their name without ``_seed<N>``)."""
    rows: dict[str, list[dict]] = {}
    for r in results:
        rows.setdefault(row_name(r["name"]), []).append(r)
    return rows


def mean_curve(records: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validation Dice of the seeds of one row on a common minute grid.

    Each seed's curve is interpolated linearly between its validations; the grid ends at the
    earliest last validation among the seeds, so every point averages all of them.

    Returns:
        ``(minutes, mean, std)``, each of shape ``(CURVE_POINTS,)`` (population std; 0 for one
        seed).
    """
    curves = [np.array([(m, d) for m, d in r["val_curve_minutes_dice"] if d is not None])
              for r in records]
    start = max(c[0, 0] for c in curves)
    stop = min(c[-1, 0] for c in curves)
    minutes = np.linspace(start, stop, CURVE_POINTS)
    values = np.stack([np.interp(minutes, c[:, 0], c[:, 1]) for c in curves])
    return minutes, values.mean(axis=0), values.std(axis=0)


def plot(results: list[dict], path: Path) -> None:
    """One panel per comparison in ``COMPARISONS`` that has at least one row measured."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = by_row(results)
    panels = [(title, [n for n in names if n in rows]) for title, names in COMPARISONS.items()]
    panels = [(title, names) for title, names in panels if names]
    columns = 2
    lines = -(-len(panels) // columns)
    fig, axes = plt.subplots(lines, columns, figsize=(13, 4.6 * lines), squeeze=False)
    colours = plt.get_cmap("tab10").colors
    for ax, (title, names) in zip(axes.flat, panels):
        for i, name in enumerate(names):
            minutes, mean, std = mean_curve(rows[name])
            seeds = len(rows[name])
            ax.plot(minutes, mean, color=colours[i % len(colours)],
                    label=f"{name.removeprefix('mscmr_few5_')} ({seeds} seed{'s' * (seeds > 1)})")
            if seeds > 1:
                ax.fill_between(minutes, mean - std, mean + std, color=colours[i % len(colours)],
                                alpha=0.2, linewidth=0)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("wall-clock training minutes (2-core CPU)")
        ax.set_ylabel("validation mean 3D Dice (5 volumes)")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def seed_table(results: list[dict]) -> str:
    """Mean +- std over seeds of every row of ``COMPARISONS`` that was measured."""
    rows = by_row(results)
    names = dict.fromkeys(n for group in COMPARISONS.values() for n in group if n in rows)
    lines = [("| row | seeds | steps | best val Dice | test Dice RV | Myo | LV |"
              " **test mean Dice** | raw (no post-processing) | HD95 RV (mm) | Myo | LV |"),
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name in names:
        agg = aggregate(rows[name])

        def cell(m: dict, digits: int = 3) -> str:  # one seed has no spread to show
            spread = f" ± {m['std']:.{digits}f}" if m["n"] > 1 else ""
            return f"{m['mean']:.{digits}f}{spread}"

        lines.append(f"| {name} | {', '.join(map(str, agg['seeds']))} | "
                     f"{agg['steps']['mean']:.0f} | {cell(agg['best_val_mean_dice'])} | "
                     + " | ".join(cell(agg["test_dice"][c]) for c in CLASSES)
                     + f" | **{cell(agg['test_mean_foreground_dice'])}** | "
                     + (cell(agg["test_raw_mean_foreground_dice"])
                        if "test_raw_mean_foreground_dice" in agg else "=") + " | "
                     + " | ".join(cell(agg["test_hd95"][c], 1) for c in CLASSES) + " |")
    return "\n".join(lines)


def myops_table() -> str:
    """The MyoPS rows (validation numbers: the test labels are not given), raw and with the
    post-processing chosen on the same validation cases."""
    lines = [
        "| row | method | budget (min) | steps | best step | val Scar Dice | Edema | **mean** | "
        "post-processing | val Scar (post-processed) | Edema | **mean** | HD95 Scar (mm) | Edema | "
        "test predictions | commit |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in sorted(RESULTS.glob("myops_*.json")):
        r = json.loads(p.read_text())
        cfg = r["config"]
        method = (cfg["method"] + (" + Dice" if cfg.get("dice_weight") else "")
                  + (", dense labels" if cfg.get("supervision") == "dense" else "")
                  + (f", {cfg['model']}" if cfg.get("model", "unet") != "unet" else ""))
        pp = r.get("postprocessing") or {}
        chosen = ([f"centre {pp['centre_fraction']:g}"] if pp.get("centre_fraction", 1) < 1
                  else []) + (["largest foreground"] if pp.get("largest_foreground") else []) + [
            f"largest {n}" for n in pp.get("largest_per_class", [])]
        raw = [r.get(f"val_raw_{k}", r[f"val_{k}"])
               for k in ("scar_dice", "edema_dice", "mean_dice")]
        hd = r["val_hd95_mm"]
        lines.append(
            f"| {r['name']} | {method} | {r['budget_minutes']:g} | {r['steps']} | "
            f"{r['best_step']} | {raw[0]:.3f} | {raw[1]:.3f} | **{raw[2]:.3f}** | "
            f"{', '.join(chosen) or 'none'} | {r['val_scar_dice']:.3f} | "
            f"{r['val_edema_dice']:.3f} | **{r['val_mean_dice']:.3f}** | {hd['Scar']:.1f} | "
            f"{hd['Edema']:.1f} | {r['test_predictions_written']} | {r['commit'][:10]} |")
    return "\n".join(lines)


def main() -> None:
    results = load()
    print(table(results))
    print()
    print(seed_table(results))
    print()
    print(myops_table())
    plot(results, REPO / "docs" / "learning_curves.png")
    for r in results:
        print(f"- `{r['name']}`: `{r['command']}` (commit {r['commit']}, started {r['started']}, "
              f"training {r['train_wall_s'] / 60:.1f} min wall, "
              f"{r['train_source_slices_per_s_median']} source slices/s median, "
              f"test prediction {r['test_predict_wall_s']} s for 15 volumes"
              + (f", peak RSS {r['peak_rss_gib']} GiB" if "peak_rss_gib" in r else "") + ")")


if __name__ == "__main__":
    main()
