import json

from medcl.cli import main


def test_demo_runs_end_to_end_and_guards_its_folder(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--minutes", "0.05", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "| LV |" in printed
    summary = json.loads((out / "evaluation" / "summary.json").read_text())
    assert summary["num_cases"] == 3
    assert 0.0 <= summary["mean_foreground_dice"] <= 1.0
    assert len(list((out / "predictions").glob("*.nii.gz"))) == 3
    assert list((out / "evaluation" / "overlays").glob("*.png"))
    assert main(["demo", "--out", str(out), "--minutes", "0.05"]) == 2
    assert "--overwrite" in capsys.readouterr().err
