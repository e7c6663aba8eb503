"""``medcl predict --output-format dicom-seg``: a DICOM SEG over each input series, read back
with highdicom, holds the NIfTI prediction's labels voxel for voxel; NIfTI input is refused."""

import numpy as np
import pytest
from conftest import one_line_error

from medcl.cli import main
from medcl.data.dicom import load_case_image, save_series
from medcl.data.dicom_seg import read_seg, save_seg
from medcl.data.io import load_nifti
from medcl.data.labels import LabelSpec
from medcl.errors import DataError
from medcl.runtime.checkpoint import checkpoint_path, load_checkpoint

pytest.importorskip("SimpleITK", reason="DICOM input needs the 'dicom' extra")
pytest.importorskip("highdicom", reason="DICOM SEG output needs the 'dicom-seg' extra")

PREDICT_FLAGS = ["--device", "cpu", "--precision", "fp32"]
#: intensities stored as int16 in the series: scale the generated image first
INTENSITY_SCALE = 1000


@pytest.fixture(scope="module")
def dicom_cases(tiny_dataset, tmp_path_factory):
    """The generated test images as DICOM series folders (one per case)."""
    root = tmp_path_factory.mktemp("dicom_seg") / "series"
    for path in sorted((tiny_dataset / "TestSet" / "images").iterdir()):
        image = load_case_image([path])
        case = path.name.split(".")[0]
        save_series(root / case, np.round(image.data[..., 0] * INTENSITY_SCALE).astype(np.int16),
                    image.affine)
    return root


def test_dicom_seg_holds_the_nifti_labels(dicom_cases, trained_run, tmp_path):
    nifti, seg = tmp_path / "nifti", tmp_path / "seg"
    base = ["predict", "-i", str(dicom_cases), "-m", str(trained_run), *PREDICT_FLAGS]
    assert main([*base, "-o", str(nifti)]) == 0
    assert main([*base, "-o", str(seg), "--output-format", "dicom-seg"]) == 0
    spec = LabelSpec.from_dict(load_checkpoint(checkpoint_path(trained_run, "best"))["label_spec"])
    cases = sorted(p.name for p in dicom_cases.iterdir())
    assert sorted(p.name for p in seg.glob("*.dcm")) == [f"{c}.dcm" for c in cases]
    foreground = 0
    for case in cases:
        expected = load_nifti(nifti / f"{case}.nii.gz", kind="label").data
        back = spec.to_values(read_seg(seg / f"{case}.dcm", dicom_cases / case))
        np.testing.assert_array_equal(back, expected)
        foreground += int((expected > 0).sum())
    assert foreground  # the comparison covers segments, not only background


def test_nifti_input_or_a_mismatched_series_is_refused(tiny_dataset, dicom_cases, trained_run,
                                                      tmp_path, capsys):
    images = tiny_dataset / "TestSet" / "images"
    assert main(["predict", "-i", str(images), "-o", str(tmp_path / "out"), "-m",
                 str(trained_run), "--output-format", "dicom-seg", *PREDICT_FLAGS]) == 2
    one_line_error(capsys, "a DICOM SEG references a DICOM series", "--output-format nifti")
    case = next(dicom_cases.iterdir())
    with pytest.raises(DataError, match="cannot reference it"):
        save_seg(tmp_path / "x.dcm", np.zeros((3, 3, 3), np.uint8), case, ("bg", "fg"),
                 model_name="unet")
