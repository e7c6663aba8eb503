"""The HTML report: one self-contained file with the tables, box plots and overlays."""

import base64
import sys
from html.parser import HTMLParser

import nibabel as nib
import numpy as np
import pytest

from medcl.errors import ConfigError
from medcl.evaluation.evaluate import evaluate_folders
from medcl.evaluation.report import (
    BROWSERS,
    REPORT_HTML,
    find_browser,
    render_report,
    screenshot,
    write_report,
)

pytest.importorskip("matplotlib", reason="the report's box plots need the 'report' extra")

SHAPE = (12, 10, 3)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data), np.diag([1.5, 1.5, 5.0, 1.0])), str(path))


@pytest.fixture
def evaluated(tmp_path):
    """Three cases with LV Dice 1 (a), 2*8/(16+8) = 2/3 (b) and 0 (c, LV missed): a summary."""
    gt = np.zeros(SHAPE, np.int16)
    gt[2:6, 2:6, 1] = 1
    preds = {"a": gt.copy(), "b": gt.copy(), "c": np.zeros(SHAPE, np.int16)}
    preds["b"][2:4, :, :] = 0  # keeps 8 of 16 voxels
    for case, pred in preds.items():
        write(tmp_path / "gt" / f"{case}.nii.gz", gt)
        write(tmp_path / "pred" / f"{case}.nii.gz", pred)
        write(tmp_path / "img" / f"{case}.nii.gz", np.random.default_rng(0).random(SHAPE))
    return evaluate_folders(tmp_path / "gt", tmp_path / "pred", class_values={"LV": 1},
                            out_dir=tmp_path / "out", image_dir=tmp_path / "img",
                            overlay_dir=tmp_path / "out" / "overlays", hd95_convention="monai")


class _Page(HTMLParser):
    """Collects image sources, links, and the text of every table cell, per table."""

    def __init__(self):
        super().__init__()
        self.images, self.links, self.tables = [], [], []
        self._cell = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs)
        if tag in ("a", "link", "script") and (attrs.get("href") or attrs.get("src")):
            self.links.append(attrs.get("href") or attrs.get("src"))
        if tag == "table":
            self.tables.append([])
        if tag == "tr":
            self.tables[-1].append([])
        if tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def parse(text):
    page = _Page()
    page.feed(text)
    return page


def test_report_is_self_contained_with_images_and_tables(evaluated, tmp_path):
    path = write_report(evaluated, tmp_path / "out" / REPORT_HTML)
    page = parse(path.read_text())
    assert page.links == []  # nothing to fetch: no links, no external scripts or styles
    sources = [img["src"] for img in page.images if img.get("src")]
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    for src in sources:
        assert base64.b64decode(src.split(",", 1)[1])[:8] == PNG_SIGNATURE
    thumbnails = [img for img in page.images if img.get("class") == "thumb"]
    # each case: the slice with the most foreground (z=1); the worst-Dice slice is the same one
    assert len(thumbnails) == sum(len(v) for v in evaluated["overlays"].values()) == 3
    assert sum("box plots" in img.get("alt", "") for img in page.images) == 1

    summary_table, case_table = page.tables
    assert summary_table[0] == ["class", "Dice", "HD95 monai (mm)", "ASSD (mm)"]
    assert summary_table[1][0] == "LV"
    assert summary_table[1][1] == f"{(1 + 2 / 3 + 0) / 3:.3f} ± {np.std([1, 2 / 3, 0]):.3f}"
    # per-case rows sorted by Dice, worst first; the missed case carries its flag
    assert [row[0] for row in case_table[1:]] == ["c", "b", "a"]
    assert [row[1] for row in case_table[1:]] == ["0.000", "0.667", "1.000"]
    assert "prediction empty" in case_table[1][case_table[0].index("empty-mask penalty")]


def test_report_without_overlays(evaluated):
    summary = {k: v for k, v in evaluated.items() if k not in ("overlays", "overlay_dir")}
    page = parse(render_report(summary, title="no images"))
    assert [img.get("class") for img in page.images].count("thumb") == 0
    assert len(page.tables[1]) == 1 + 3


def test_missing_matplotlib_names_the_extra(evaluated, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails as if not installed
    with pytest.raises(ConfigError, match=r"needs matplotlib.*pip install 'medcl\[report\]'"):
        render_report(evaluated)


def test_report_renders_in_headless_chromium(evaluated, tmp_path):
    if find_browser() is None:
        pytest.skip(f"no headless browser ({', '.join(BROWSERS)}) on this machine; the report's "
                    "HTML is checked by parsing in the other tests")
    shot = screenshot(write_report(evaluated, tmp_path / REPORT_HTML), tmp_path / "shot.png",
                      window=(1200, 900))
    from PIL import Image

    with Image.open(shot) as png:
        pixels = np.asarray(png.convert("RGB"))
    assert pixels.shape == (900, 1200, 3)
    # the page drew more than a blank sheet: text, table borders and the plots' colours
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 100
