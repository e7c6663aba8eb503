"""`medcl predict` on DICOM series and `medcl evaluate --hd95 ... --report` end to end."""

import json
import shutil
import sys

import nibabel as nib
import numpy as np
import pytest

from medcl.cli import main


def test_predict_dicom_series_keeps_their_geometry(tiny_dataset, trained_run, tmp_path, capsys):
    pytest.importorskip("SimpleITK", reason="DICOM input needs the 'dicom' extra")
    from medcl.data.dicom import save_series

    series = tmp_path / "dicom"
    sources = sorted((tiny_dataset / "TestSet" / "images").iterdir())
    for src in sources:
        img = nib.load(str(src))
        case = src.name.replace(".nii.gz", "")
        save_series(series / case, np.rint(img.get_fdata() * 100).astype(np.int16), img.affine)
    out = tmp_path / "pred"
    assert main(["predict", "-i", str(series), "-o", str(out), "-m", str(trained_run),
                 "--overlays", "1"]) == 0
    for src in sources:
        case = src.name.replace(".nii.gz", "")
        pred, ref = nib.load(str(out / f"{case}.nii.gz")), nib.load(str(src))
        assert pred.shape == ref.shape
        np.testing.assert_allclose(pred.affine, ref.affine, atol=1e-4)
    assert len(list((out / "overlays").glob("*.png"))) == len(sources)
    # one series folder on its own is one case
    single = tmp_path / "single"
    assert main(["predict", "-i", str(series / sources[0].name.replace(".nii.gz", "")),
                 "-o", str(single), "-m", str(trained_run)]) == 0
    assert [p.name for p in single.glob("*.nii.gz")] == [sources[0].name]
    capsys.readouterr()


def test_evaluate_hd95_and_report(tiny_dataset, tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="the report needs the 'report' extra")
    labels = tiny_dataset / "TestSet" / "labels"
    preds = tmp_path / "pred"  # the labels as predictions, named by case id
    preds.mkdir()
    for path in labels.iterdir():
        shutil.copy(path, preds / path.name.replace("_manual", ""))
    out = tmp_path / "eval"
    assert main(["evaluate", str(labels), str(preds), "-o", str(out), "--hd95", "monai",
                 "--labels", str(tiny_dataset / "dataset.json"),
                 "--images", str(tiny_dataset / "TestSet" / "images"), "--report"]) == 0
    printed = capsys.readouterr().out
    assert "HD95 monai (mm)" in printed and f"report written to {out / 'report.html'}" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["hd95_convention"] == "monai"
    assert summary["overall"]["mean"]["dice"] == 1.0  # the labels against themselves
    html = (out / "report.html").read_text()
    assert html.count('class="thumb"') == sum(len(v) for v in summary["overlays"].values()) == 2


def test_evaluate_report_without_matplotlib_is_one_line(tiny_dataset, tmp_path, capsys,
                                                         monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    labels = tiny_dataset / "TestSet" / "labels"
    assert main(["evaluate", str(labels), str(labels), "-o", str(tmp_path), "--report"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == ("medcl evaluate: error: the HTML report's box plots needs matplotlib, "
                       "which is not installed: pip install 'medcl[report]'")


def test_evaluate_rejects_an_unknown_hd95_convention(tiny_dataset, capsys):
    labels = str(tiny_dataset / "TestSet" / "labels")
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", labels, labels, "--hd95", "pooled"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'pooled'" in capsys.readouterr().err
