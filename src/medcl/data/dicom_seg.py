"""DICOM SEG output: a predicted label map as a DICOM Segmentation object that references the
series it was predicted from, so a PACS or viewer shows it over that series.

Written with highdicom (``pip install 'medcl[dicom-seg]'``): a BINARY segmentation with one
segment per foreground class, segment number = class index (1..K-1), segment label = class
name, one frame per source slice (empty frames kept). medcl's class names carry no coded
meaning, so every segment's property category and type is the generic SNOMED CT "Tissue"
(85756007); a site that needs coded anatomy maps the labels itself.

Geometry: file ``z`` of the series (:func:`~medcl.data.dicom.series_files`) is slice ``z`` of
the volume ``(X, Y, Z)``; DICOM frames are ``(rows, columns) = (Y, X)``, so frame ``z`` is
``labels[:, :, z].T``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from medcl import __version__
from medcl.data.dicom import series_files
from medcl.errors import ConfigError, DataError
from medcl.extras import require
from medcl.files import atomic_path

log = logging.getLogger(__name__)

SEG_SUFFIX = ".dcm"
#: what ``medcl predict --output-format`` writes: NIfTI label maps, or DICOM SEG objects
OUTPUT_FORMATS = ("nifti", "dicom-seg")
#: the predictions' file suffix of each output format
OUTPUT_SUFFIXES = dict(zip(OUTPUT_FORMATS, (".nii.gz", SEG_SUFFIX), strict=True))
#: SNOMED CT "Tissue": the coded category and type of every segment (names are not coded)
TISSUE_CODE = ("85756007", "SCT", "Tissue")
#: DICOM "Artificial Intelligence": the algorithm family
AI_CODE = ("123110", "DCM", "Artificial Intelligence")
SERIES_NUMBER = 300
INSTANCE_NUMBER = 1
MANUFACTURER = "medcl"
DEVICE_SERIAL = "none"
#: (X, Y, Z) <-> (Z, Y, X): the axis order is its own inverse
_FRAME_AXES = (2, 1, 0)


def _frames(labels: np.ndarray) -> np.ndarray:
    """Class indices ``(X, Y, Z)`` -> frames ``(Z, rows = Y, columns = X)``, one per slice."""
    return np.ascontiguousarray(np.transpose(labels, _FRAME_AXES))


def output_suffix(output_format: str, first_channels: Iterable[Path]) -> str:
    """The file suffix of ``output_format``'s predictions of cases whose first channels are
    ``first_channels`` (NIfTI files or DICOM series folders).

    Raises:
        ConfigError: an unknown format.
        DataError: ``dicom-seg`` for a NIfTI case (a SEG references a series).
    """
    if output_format not in OUTPUT_SUFFIXES:
        raise ConfigError(f"output_format must be one of {', '.join(OUTPUT_FORMATS)}, got "
                          f"{output_format!r}")
    nifti = [p for p in first_channels if not Path(p).is_dir()]
    if output_format == "dicom-seg" and nifti:
        raise DataError(f"{nifti[0]}: a DICOM SEG references a DICOM series; this case is a "
                        "NIfTI file (predict it with --output-format nifti)")
    return OUTPUT_SUFFIXES[output_format]


def save_seg(path: str | os.PathLike, labels: np.ndarray, series_folder: str | os.PathLike,
             class_names: Sequence[str], *, model_name: str) -> Path:
    """Write class indices ``labels (X, Y, Z)`` (0 = background) predicted on the series in
    ``series_folder`` as a DICOM SEG at ``path``, atomically.

    Args:
        class_names: name of each class index (index 0, the background, is no segment).
        model_name: the network, recorded as the algorithm's name (medcl's version as its
            version and the software version).

    Raises:
        ConfigError: highdicom is not installed.
        DataError: the series does not match ``labels``' shape, or highdicom refuses it.
    """
    hd = require("highdicom", extra="dicom-seg", feature="DICOM SEG output")
    pydicom = require("pydicom", extra="dicom-seg", feature="DICOM SEG output")
    _, files = series_files(series_folder)
    sources = [pydicom.dcmread(f) for f in files]
    frames = _frames(labels)
    shape = (len(sources), int(sources[0].Rows), int(sources[0].Columns))
    if frames.shape != shape:
        raise DataError(f"{series_folder}: the series has {shape[0]} slices of {shape[1]} x "
                        f"{shape[2]} pixels, the prediction {frames.shape}; cannot reference it")
    tissue = hd.sr.CodedConcept(*TISSUE_CODE)
    algorithm = hd.AlgorithmIdentificationSequence(
        name=f"medcl {model_name}", version=__version__, family=hd.sr.CodedConcept(*AI_CODE))
    segments = [hd.seg.SegmentDescription(
        segment_number=k, segment_label=name, segmented_property_category=tissue,
        segmented_property_type=tissue, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm) for k, name in enumerate(class_names) if k > 0]
    try:
        seg = hd.seg.Segmentation(
            source_images=sources, pixel_array=frames.astype(np.uint8 if len(class_names) <= 256
                                                             else np.uint16),
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=segments, series_instance_uid=hd.UID(),
            series_number=SERIES_NUMBER, sop_instance_uid=hd.UID(),
            instance_number=INSTANCE_NUMBER, manufacturer=MANUFACTURER,
            manufacturer_model_name=f"medcl {model_name}", software_versions=__version__,
            device_serial_number=DEVICE_SERIAL, omit_empty_frames=False)
    except (ValueError, TypeError, AttributeError) as exc:
        raise DataError(f"{series_folder}: cannot make a DICOM SEG of it "
                        f"({type(exc).__name__}: {' '.join(str(exc).split())})") from exc
    path = Path(path)
    with atomic_path(path) as tmp:
        seg.save_as(tmp)
    log.debug("%s: DICOM SEG of %d segments over %d frames", path, len(segments), shape[0])
    return path


def read_seg(path: str | os.PathLike, series_folder: str | os.PathLike) -> np.ndarray:
    """Class indices ``(X, Y, Z)`` of a DICOM SEG written by :func:`save_seg` over the series
    in ``series_folder`` (frames ordered as the series' slices)."""
    hd = require("highdicom", extra="dicom-seg", feature="DICOM SEG input")
    pydicom = require("pydicom", extra="dicom-seg", feature="DICOM SEG input")
    _, files = series_files(series_folder)
    uids = [pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in files]
    seg = hd.seg.segread(path)
    frames = seg.get_pixels_by_source_instance(uids, combine_segments=True)
    return np.transpose(frames, _FRAME_AXES)
