"""A self-contained HTML report of an evaluation: tables, box plots and overlays in one file.

:func:`write_report` turns a summary of :func:`medcl.evaluation.evaluate.evaluate_folders` (or
its ``summary.json``) into one HTML file that needs nothing else: the box plots and the overlay
PNGs are inlined as ``data:`` URIs, the styles and the few lines of script that open a thumbnail
large are inline too, and nothing is loaded from the internet. It holds

* the summary table (mean ± std per class and over the foreground classes);
* box plots of the per-case Dice and HD95 of each class (matplotlib, the ``report`` extra);
* one row per case, sorted by mean foreground Dice, worst first, with the per-class Dice and
  HD95, the empty-mask flags and the case's overlays as thumbnails (click to enlarge);
* the metric definitions, with the HD95 convention used.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from medcl.errors import ConfigError
from medcl.evaluation.markdown import DECIMALS, mean_std_text, metric_headers
from medcl.evaluation.metrics import METRIC_NAMES
from medcl.evaluation.overlay import class_colours
from medcl.extras import require
from medcl.files import atomic_write_text
from medcl.ownership import OutputFolder

log = logging.getLogger(__name__)

REPORT_HTML = "report.html"
#: metrics shown as box plots, one panel each.
PLOTTED_METRICS = ("dice", "hd95")
PLOT_SIZE_INCHES = (5.0, 3.6)
PLOT_DPI = 100
#: per-case dots: spread across this half-width of the box, marker size in points**2.
DOT_SPREAD = 0.15
DOT_SIZE = 10
BOX_FILL_ALPHA = 0.35
GRID_ALPHA = 0.3
THUMB_WIDTH = 200
#: browsers tried by :func:`screenshot`, and its page size in pixels.
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
SCREENSHOT_WINDOW = (1280, 1400)
SCREENSHOT_TIMEOUT_S = 120
#: colour of a class without an overlay colour (the background, if evaluated).
NEUTRAL_COLOUR = (128, 128, 128)

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; }
table { border-collapse: collapse; margin: 12px 0; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; vertical-align: middle; }
th:first-child, td:first-child { text-align: left; }
th { background: #f0f0f0; }
img.thumb { width: %dpx; cursor: zoom-in; margin: 2px; border: 1px solid #999; }
img.plot { max-width: 100%%; }
dialog { padding: 0; border: none; background: #111; }
dialog img { max-width: 95vw; max-height: 92vh; display: block; }
td:last-child { white-space: nowrap; }
.flag { color: #b00; }
.small { color: #666; font-size: 90%%; }
""" % THUMB_WIDTH
_SCRIPT = """
const viewer = document.getElementById('viewer');
document.querySelectorAll('img.thumb').forEach(function (thumb) {
  thumb.addEventListener('click', function () {
    viewer.querySelector('img').src = thumb.src;
    viewer.showModal();
  });
});
viewer.addEventListener('click', function () { viewer.close(); });
"""


def png_data_uri(data: bytes) -> str:
    """A ``data:image/png;base64,...`` URI of PNG bytes."""
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _hex(colour: Sequence[int]) -> str:
    return "#" + "".join(f"{c:02x}" for c in colour)


def _colour(summary: Mapping, name: str) -> tuple[int, int, int]:
    """The class's colour in the overlays."""
    return class_colours(summary["classes"]).get(summary["classes"][name], NEUTRAL_COLOUR)


def box_plots(summary: Mapping) -> bytes:
    """PNG bytes of box plots of the per-case values of each class, one panel per metric.

    Raises:
        ConfigError: matplotlib is not installed (the ``report`` extra).
    """
    require("matplotlib", extra="report", feature="the HTML report's box plots")
    from matplotlib.figure import (
        Figure,  # no pyplot: no global state, no display needed
    )

    classes = list(summary["classes"])
    headers = metric_headers(summary)
    width, height = PLOT_SIZE_INCHES
    figure = Figure(figsize=(width * len(PLOTTED_METRICS), height), dpi=PLOT_DPI,
                    layout="constrained")
    for i, metric in enumerate(PLOTTED_METRICS):
        axes = figure.add_subplot(1, len(PLOTTED_METRICS), i + 1)
        values = [[summary["cases"][c][name][metric] for c in summary["cases"]] for name in classes]
        boxes = axes.boxplot(values, patch_artist=True, showfliers=False)
        axes.set_xticks(range(1, len(classes) + 1), classes)
        for j, (patch, column) in enumerate(zip(boxes["boxes"], values)):
            colour = [c / 255 for c in _colour(summary, classes[j])]
            patch.set_facecolor((*colour, BOX_FILL_ALPHA))
            patch.set_edgecolor(colour)
            # every case as a dot, spread evenly across the box so none hides another
            offsets = (np.linspace(-DOT_SPREAD, DOT_SPREAD, len(column)) if len(column) > 1
                       else [0.0])
            axes.scatter(j + 1 + np.asarray(offsets), column, s=DOT_SIZE, color=colour, zorder=3)
        axes.set_title(f"per-case {headers[metric]}")
        axes.grid(axis="y", alpha=GRID_ALPHA)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _fmt(value: float, metric: str) -> str:
    return f"{value:.{DECIMALS[metric]}f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """An HTML table; ``header`` cells are escaped, row cells are HTML already."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _summary_table(summary: Mapping) -> str:
    headers = metric_headers(summary)
    rows = [[html.escape(n), *(mean_std_text(summary["mean"][n], summary["std"][n], m)
                               for m in METRIC_NAMES)] for n in summary["classes"]]
    overall = summary["overall"]
    rows.append(["<b>mean (foreground)</b>",
                 *(mean_std_text(overall["mean"], overall["std"], m) for m in METRIC_NAMES)])
    return _table(["class", *(headers[m] for m in METRIC_NAMES)], rows)


def _case_order(summary: Mapping) -> list[str]:
    """Case ids by mean Dice over the classes, worst first (ties by case id)."""
    def mean_dice(case: str) -> float:
        return float(np.mean([v["dice"] for v in summary["cases"][case].values()]))

    return sorted(summary["cases"], key=lambda c: (mean_dice(c), c))


def _thumbnails(case: str, summary: Mapping) -> str:
    folder = summary.get("overlay_dir")
    cells = []
    for name in summary.get("overlays", {}).get(case, []):
        path = Path(folder) / name
        if not path.is_file():
            log.warning("%s: overlay missing; left out of the report", path)
            continue
        alt = html.escape(f"{case}: {name}", quote=True)
        cells.append(f'<img class="thumb" src="{png_data_uri(path.read_bytes())}" alt="{alt}" '
                     f'title="{alt}">')
    return "".join(cells)


def _case_table(summary: Mapping) -> str:
    classes = list(summary["classes"])
    headers = metric_headers(summary)
    flags: dict[str, list[str]] = {}
    for flag in summary.get("flagged", []):
        flags.setdefault(flag["case"], []).append(f"{flag['class']}: {flag['reason']}")
    rows = []
    for case in _case_order(summary):
        result = summary["cases"][case]
        mean = float(np.mean([v["dice"] for v in result.values()]))
        note = "<br>".join(html.escape(f) for f in flags.get(case, []))
        rows.append([html.escape(case), _fmt(mean, "dice"),
                     *(_fmt(result[n][m], m) for m in PLOTTED_METRICS for n in classes),
                     f'<span class="flag">{note}</span>', _thumbnails(case, summary)])
    header = ["case", "mean Dice", *(f"{n} {headers[m]}" for m in PLOTTED_METRICS for n in classes),
              "empty-mask penalty", "overlays (click to enlarge)"]
    return _table(header, rows)


def _legend(summary: Mapping) -> str:
    items = [f'<span style="color:{_hex(_colour(summary, name))}">&#9632;</span> '
             f"{html.escape(name)}" for name in summary["classes"]]
    return " &nbsp; ".join(items)


def render_report(summary: Mapping, *, title: str | None = None) -> str:
    """The HTML text of the report of ``summary`` (module docstring for its content)."""
    title = title or f"Segmentation evaluation ({summary['num_cases']} cases)"
    sources = (f"ground truth <code>{html.escape(str(summary.get('gt_dir', '')))}</code>, "
               f"predictions <code>{html.escape(str(summary.get('pred_dir', '')))}</code>; "
               f"HD95 convention <b>{html.escape(summary.get('hd95_convention', 'medpy'))}</b>")
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>", f'<p class="small">{sources}</p>',
        "<h2>Summary</h2>", _summary_table(summary),
        f'<p class="small">Classes: {_legend(summary)}. Overlays: prediction filled, ground truth '
        "outlined, radiological orientation.</p>",
        "<h2>Per-case distribution</h2>",
        f'<img class="plot" alt="box plots of per-case metrics" '
        f'src="{png_data_uri(box_plots(summary))}">',
        "<h2>Cases, worst mean Dice first</h2>", _case_table(summary),
        "<h2>Definitions</h2>", f'<p class="small">{html.escape(summary["definitions"])}</p>',
        '<dialog id="viewer"><img alt="overlay, large"></dialog>',
        f"<script>{_SCRIPT}</script>", "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def write_report(summary: Mapping, path: str | os.PathLike, *, title: str | None = None) -> Path:
    """Write the HTML report of ``summary`` to ``path`` (atomically) and return ``path``;
    replaces only a report medcl wrote (:mod:`medcl.ownership`).

    Raises:
        ConfigError: matplotlib is not installed (``pip install 'medcl[report]'``).
        DataError: a file medcl did not write is at ``path``.
    """
    path = Path(path)
    record = OutputFolder(path.parent, "evaluate")
    record.check([path], overwrite=True)
    atomic_write_text(path, render_report(summary, title=title))
    record.record([path])
    log.info("wrote %s (%.1f MB)", path, path.stat().st_size / 2**20)
    return path


def find_browser() -> str | None:
    """Path of a Chromium-family browser on ``PATH``, or ``None``."""
    return next((shutil.which(name) for name in BROWSERS if shutil.which(name)), None)


def screenshot(html_path: str | os.PathLike, png_path: str | os.PathLike, *,
               window: tuple[int, int] = SCREENSHOT_WINDOW) -> Path:
    """Render ``html_path`` in headless Chromium (fresh profile, no network services) to a PNG
    of ``window`` ``(width, height)`` pixels; for the docs and the tests.

    Raises:
        ConfigError: no Chromium-family browser on ``PATH``.
    """
    browser = find_browser()
    if browser is None:
        raise ConfigError(f"a screenshot needs one of {', '.join(BROWSERS)} on PATH")
    png_path = Path(png_path)
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update",
                        "--disable-sync", f"--user-data-dir={profile}",
                        f"--screenshot={png_path}", f"--window-size={window[0]},{window[1]}",
                        Path(html_path).resolve().as_uri()],
                       check=True, capture_output=True, timeout=SCREENSHOT_TIMEOUT_S)
    return png_path
