"""A summary of :func:`medcl.evaluation.evaluate.evaluate_folders` as text: the Markdown report
(``summary.md``, the tables ``medcl evaluate`` prints) and the number formats the HTML report
shares."""

from __future__ import annotations

from typing import Mapping

from medcl.evaluation.metrics import HD95_MEDPY, METRIC_NAMES

DICE_DECIMALS = 3
MM_DECIMALS = 2
#: decimals shown per metric in the Markdown and HTML reports.
DECIMALS = {"dice": DICE_DECIMALS, "hd95": MM_DECIMALS, "assd": MM_DECIMALS}
_HEADERS = {"dice": "Dice", "hd95": "HD95 (mm)", "assd": "ASSD (mm)"}


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|")


def _row(cells: list[object]) -> str:
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def _table(header: list[str], rows: list[list[object]]) -> list[str]:
    return [_row(header), _row(["---"] * len(header)), *(_row(r) for r in rows)]


def mean_std_text(mean: Mapping[str, float], std: Mapping[str, float], metric: str) -> str:
    """``"mean ± std"`` of ``metric`` with its report decimals."""
    d = DECIMALS[metric]
    return f"{mean[metric]:.{d}f} ± {std[metric]:.{d}f}"


def metric_headers(summary: Mapping) -> dict[str, str]:
    """Column header per metric; HD95's names the convention the summary was computed with."""
    convention = summary.get("hd95_convention", HD95_MEDPY)
    return {**_HEADERS, "hd95": f"HD95 {convention} (mm)"}


def format_markdown(summary: Mapping) -> str:
    """Markdown report of a summary from :func:`~medcl.evaluation.evaluate.evaluate_folders`
    (or its ``summary.json``).

    A table of mean ± std per class and overall, a per-case table, the cases penalised by the
    empty-mask rule, and the metric definitions.
    """
    classes = list(summary["classes"])
    lines = [f"# Segmentation evaluation ({summary['num_cases']} cases)", ""]
    rows = [[name, *(mean_std_text(summary["mean"][name], summary["std"][name], m)
                     for m in METRIC_NAMES)]
            for name in classes]
    overall = summary["overall"]
    rows.append(["**Mean (foreground)**",
                 *(mean_std_text(overall["mean"], overall["std"], m) for m in METRIC_NAMES)])
    headers = metric_headers(summary)
    lines += _table(["Class", *(headers[m] for m in METRIC_NAMES)], rows)
    if summary.get("groups"):
        grouped = summary["groups"]
        rows = [[f"{n} {grouped['values'][n]}",
                 *(mean_std_text(grouped["mean"][n], grouped["std"][n], m) for m in METRIC_NAMES)]
                for n in grouped["values"]]
        lines += ["", "## Groupings (union of the classes' values)", ""]
        lines += _table(["Grouping", *(headers[m] for m in METRIC_NAMES)], rows)
        lines += ["", f"Mean Dice of the groupings: {grouped['mean_dice']:.{DICE_DECIMALS}f}"]

    lines += ["", "## Per case", ""]
    header = ["Case", *(f"{n} {headers[m]}" for n in classes for m in METRIC_NAMES)]
    rows = [[case, *(f"{res[n][m]:.{DECIMALS[m]}f}" for n in classes for m in METRIC_NAMES)]
            for case, res in summary["cases"].items()]
    lines += _table(header, rows)

    if summary.get("flagged"):
        lines += ["", "## Empty-mask penalties", "",
                  "Dice 0 and HD95 = ASSD = volume diagonal for:", ""]
        lines += [f"- {f['case']} / {f['class']}: {f['reason']}" for f in summary["flagged"]]
    lines += ["", "## Definitions", "", summary["definitions"], ""]
    return "\n".join(lines)
