"""Checks on the real MSCMRseg release (skipped where it is absent; see conftest.mscmr_root)."""

import numpy as np
from conftest import REPO, tiny_config

from medcl.data.datasets import discover
from medcl.data.io import load_nifti
from medcl.inference.predictor import Predictor
from medcl.runtime.checkpoint import checkpoint_path, load_checkpoint
from medcl.training.run import train

LABELS = REPO / "examples" / "mscmr.json"


def test_discovery_finds_all_cases_with_their_label_values(mscmr_root):
    ds = discover(mscmr_root, LABELS)
    assert {s: len(ds.cases(s)) for s in ("train", "val", "test")} == {"train": 25, "val": 5,
                                                                       "test": 15}
    assert all(c.label_path.name.endswith("_DE_scribble.nii.gz") for c in ds.cases("train"))
    assert all(c.label_path.name.endswith("_DE_manual.nii.gz") for c in ds.cases("test"))
    assert [c.case_id for c in ds.cases("train")][:5] == [
        "subject13_DE", "subject14_DE", "subject15_DE", "subject18_DE", "subject19_DE"]
    scribble = load_nifti(ds.cases("train")[0].label_path, kind="label")
    assert set(np.unique(scribble.data)) == {0, 1, 2, 3, 4}
    for case in ds.cases("val"):
        assert set(np.unique(load_nifti(case.label_path, kind="label").data)) == {0, 1, 2, 3}


def test_short_training_writes_loadable_checkpoint(mscmr_root, tmp_path):
    cfg = tiny_config(mscmr_root, labels=str(LABELS), num_scribbled=5, target_spacing=2.5,
                      crop_size=64, iterations=2, val_interval=0)
    result = train(cfg, tmp_path / "run")
    assert result["step"] == 2 and 0.0 <= result["best"] <= 1.0
    ckpt = load_checkpoint(checkpoint_path(tmp_path / "run", "last"))
    assert ckpt["label_spec"]["labels"] == {"background": 0, "RV": 1, "Myo": 2, "LV": 3,
                                            "ignore": 4}
    predictor = Predictor.from_run(tmp_path / "run", device="cpu")
    assert predictor.spec.num_classes == 4
