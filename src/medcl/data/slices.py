"""Cases loaded once into memory as preprocessed slices, and the training-batch sampler.

NIfTI files are read and preprocessed once (:func:`load_case`); training then samples slices
from memory (:class:`SliceSampler`), so no file is read again during training.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from medcl.data.datasets import Case
from medcl.data.geometry import GeometryNotes, align, read_image
from medcl.data.io import Volume, load_nifti
from medcl.data.labels import BACKGROUND, LabelSpec
from medcl.data.preprocessing import (
    PreprocessConfig,
    field_of_view,
    image_to_slices,
    labels_to_slices,
)
from medcl.data.transforms import center_crop_or_pad, crop_around, random_crop
from medcl.errors import ConfigError, DataError

CROP_MODES = ("random", "center")

log = logging.getLogger(__name__)


@dataclass
class PreparedCase:
    """One case in memory.

    Attributes:
        case_id: the case id.
        image: normalised, resampled slices ``(Z, C, H, W)`` float32.
        labels: class indices ``(Z, H, W)`` int64 with ``ignore_index`` for unlabelled pixels,
            or ``None`` when the case has no labels (or they are hidden, see ``labelled``).
        tags: image-level class tags ``(Z, K)`` bool: class ``k`` occurs in slice ``z``'s
            annotation. Kept for cases whose scribbles are hidden.
        labelled: whether ``labels`` may be used for supervision.
        reference: the input volume (geometry for writing outputs; data is the raw image);
            kept for validation cases only (``keep_dense``), ``None`` for training cases.
        dense_labels: class indices at the input grid ``(X, Y, Z)`` (validation/evaluation).

    Labels are stored in the smallest integer type that holds ``ignore_index``
    (:func:`compact_labels`); the sampler hands out int64 batches.
    """

    case_id: str
    image: torch.Tensor
    labels: torch.Tensor | None
    tags: torch.Tensor | None
    labelled: bool
    reference: Volume | None
    dense_labels: np.ndarray | None = None


def read_label(path, spec: LabelSpec, kind: str | None = None) -> Volume:
    """Read a label file of ``kind``; its values are rounded first when the kind says so."""
    if not spec.kind(kind).round:
        return load_nifti(path, kind="label")
    label = load_nifti(path, kind="image")  # float32 holds integers up to 2**24 exactly
    label.data = np.rint(label.data).astype(np.int64)
    return label


def read_case(case: Case, spec: LabelSpec, *, geometry: str = "auto",
              notes: GeometryNotes | None = None) -> tuple[Volume, np.ndarray | None]:
    """Read a case's image ``(X, Y, Z, C)`` and its label map as class indices ``(X, Y, Z)``.

    Channels and the label file are checked against the first channel by the geometry policy
    (:mod:`medcl.data.geometry`, mode ``geometry``); files put on the image's grid are recorded
    in ``notes``.
    """
    image = read_image(case.image_paths, mode=geometry, notes=notes)
    if image.data.shape[-1] != spec.in_channels:
        raise DataError(f"{case.image_paths[0]}: {image.data.shape[-1]} channels, the dataset "
                        f"declares {spec.in_channels}")
    if case.label_path is None:
        return image, None
    label, _ = align(image, read_label(case.label_path, spec, case.label_kind), mode=geometry,
                     notes=notes)
    return image, spec.to_indices(label.data, source=case.label_path, kind=case.label_kind)


def class_tags(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per-slice class presence ``(Z, K)`` bool from class indices ``(Z, H, W)``."""
    flat = labels.reshape(labels.shape[0], -1)
    return torch.stack([(flat == k).any(dim=1) for k in range(num_classes)], dim=1)


def compact_labels(labels: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """``labels`` as int16 when every class index and ``ignore_index`` fit (a quarter of int64's
    memory: what a training set of large CT volumes needs), else unchanged."""
    return labels.to(torch.int16) if ignore_index <= torch.iinfo(torch.int16).max else labels


def load_case(case: Case, spec: LabelSpec, cfg: PreprocessConfig, *, labelled: bool = True,
              keep_dense: bool = False, geometry: str = "auto",
              notes: GeometryNotes | None = None) -> PreparedCase:
    """Read and preprocess one case.

    Args:
        labelled: ``False`` hides the labels from supervision but keeps the class tags (the
            few-scribble setting's unscribbled volumes).
        keep_dense: keep the label map at the input grid (for validation Dice).
        geometry, notes: see :func:`read_case`.

    With ``cfg.nonzero_mask`` the unlabelled pixels outside the field of view become background.
    """
    image, labels = read_case(case, spec, geometry=geometry, notes=notes)
    spacing_xy = image.spacing[:2]
    mask = field_of_view(image.data) if cfg.nonzero_mask else None
    slices = image_to_slices(image.data, spacing_xy, cfg, mask)
    label_slices = tags = None
    if labels is not None and mask is not None:
        labels = np.where(~mask & (labels == spec.ignore_index), 0, labels)
    if labelled and labels is not None and not (labels != spec.ignore_index).any():
        log.warning("%s: no scribbled voxel (every voxel is the ignore label); case %s is "
                    "treated as unlabelled", case.label_path, case.case_id)
        labelled = False
    if labels is not None:
        label_slices = labels_to_slices(labels, spacing_xy, cfg)
        tags = class_tags(torch.from_numpy(labels.transpose(2, 0, 1)), spec.num_classes)
        label_slices = compact_labels(label_slices, spec.ignore_index)
    return PreparedCase(case_id=case.case_id, image=slices,
                        labels=label_slices if labelled else None, tags=tags,
                        labelled=labelled and labels is not None,
                        reference=image if keep_dense else None,
                        dense_labels=labels if keep_dense else None)


def select_scribbled(cases: Sequence[Case], *, num_scribbled: int | None = None,
                     scribbled_cases: Sequence[str] | None = None) -> set[str]:
    """Case ids whose scribbles are used; the others are treated as unlabelled.

    Default order is the sorted case ids, so ``num_scribbled=5`` on MSCMR keeps subject13, 14,
    15, 18, 19. ``None`` for both keeps every case.
    """
    ids = sorted(c.case_id for c in cases)
    if scribbled_cases:
        unknown = sorted(set(scribbled_cases) - set(ids))
        if unknown:
            raise ConfigError(f"scribbled_cases {unknown} are not training cases "
                              f"(e.g. {', '.join(ids[:3])})")
        return set(scribbled_cases)
    if num_scribbled is None:
        return set(ids)
    if not 1 <= num_scribbled <= len(ids):
        raise ConfigError(f"num_scribbled must be in 1..{len(ids)}, got {num_scribbled}")
    return set(ids[:num_scribbled])


class SliceSampler:
    """Draws random training batches of fixed-size 2D crops from prepared cases.

    Args:
        cases: prepared training cases.
        crop_size: ``(h, w)`` of the crops; smaller slices are padded (image 0, labels ignore).
        ignore_index: label index of unlabelled pixels.
        labelled_fraction: share of each batch drawn from slices with at least one labelled
            pixel; the rest comes from slices without any (unscribbled volumes). ``1.0`` uses
            labelled slices only; without unlabelled slices every draw is labelled.
        generator: CPU generator that drives all sampling (saved in checkpoints).
        class_balance: share of the labelled draws that first pick a foreground class uniformly,
            then a slice where it is labelled, and crop around one of its pixels (random crops
            only), so that small structures (adrenal glands in a 512 x 512 CT) are seen; 0
            draws slices uniformly.
    """

    def __init__(self, cases: Sequence[PreparedCase], *, crop_size: tuple[int, int],
                 ignore_index: int, labelled_fraction: float, generator: torch.Generator,
                 crop_mode: str = "random", class_balance: float = 0.0) -> None:
        if not 0 <= class_balance <= 1:
            raise ConfigError(f"class_balance must be in [0, 1], got {class_balance}")
        self.class_balance = class_balance
        if crop_mode not in CROP_MODES:
            raise ConfigError(f"unknown crop_mode {crop_mode!r}; valid: {', '.join(CROP_MODES)}")
        self.crop_mode = crop_mode
        if not 0 < labelled_fraction <= 1:
            raise ConfigError(f"labelled_fraction must be in (0, 1], got {labelled_fraction}")
        self.cases = list(cases)
        self.crop_size = tuple(crop_size)
        self.ignore_index = ignore_index
        self.labelled_fraction = labelled_fraction
        self.generator = generator
        pools: dict[bool, list[tuple[int, int]]] = {True: [], False: []}
        for ci, case in enumerate(self.cases):
            for z in range(case.image.shape[0]):
                has_label = case.labels is not None and bool(
                    (case.labels[z] != ignore_index).any())
                pools[has_label].append((ci, z))
        if not pools[True]:
            raise DataError("no training slice carries a labelled pixel")
        self.labelled = torch.tensor(pools[True], dtype=torch.long)
        self.by_class = self._class_pools() if class_balance else {}
        self.unlabelled = torch.tensor(pools[False], dtype=torch.long).view(-1, 2)
        log.info("sampler: %d labelled and %d unlabelled slices from %d cases",
                 len(self.labelled), len(self.unlabelled), len(self.cases))

    def __len__(self) -> int:
        return len(self.labelled) + (len(self.unlabelled) if self.labelled_fraction < 1 else 0)

    def _class_pools(self) -> dict[int, torch.Tensor]:
        """Per labelled foreground class, the ``(case, slice)`` pairs where it is labelled."""
        pools: dict[int, list[tuple[int, int]]] = {}
        for ci, z in self.labelled.tolist():
            for k in torch.unique(self.cases[ci].labels[z]).tolist():
                if k != self.ignore_index and k != BACKGROUND:
                    pools.setdefault(k, []).append((ci, z))
        return {k: torch.tensor(v, dtype=torch.long) for k, v in sorted(pools.items())}

    def _balanced_crop(self, case: PreparedCase, z: int, k: int, labels: torch.Tensor):
        """Crop slice ``z`` of ``case`` around a random pixel of class ``k``."""
        pixels = torch.nonzero(labels == k)
        centre = pixels[int(torch.randint(len(pixels), (1,), generator=self.generator))]
        return crop_around(case.image[z], labels, self.crop_size, centre.tolist(),
                           ignore_index=self.ignore_index, generator=self.generator)

    def _draw(self, pool: torch.Tensor, n: int) -> torch.Tensor:
        if n == 0:
            return pool[:0]
        return pool[torch.randint(len(pool), (n,), generator=self.generator)]

    def _balance(self, picks: torch.Tensor, n_labelled: int) -> list[int | None]:
        """With ``class_balance``, replace some labelled picks (in place) by a slice of a
        uniformly drawn class; the class of each pick, or ``None`` for a plain pick."""
        forced: list[int | None] = [None] * len(picks)
        if not self.by_class or self.crop_mode != "random":
            return forced
        classes = list(self.by_class)
        for i in range(n_labelled):
            if float(torch.rand(1, generator=self.generator)) < self.class_balance:
                k = classes[int(torch.randint(len(classes), (1,), generator=self.generator))]
                picks[i] = self._draw(self.by_class[k], 1)[0]
                forced[i] = k
        return forced

    def sample(self, batch_size: int, *, labelled_only: bool = False
               ) -> dict[str, torch.Tensor]:
        """A batch: ``image (B, C, h, w)`` float, ``labels (B, h, w)`` long, ``tags (B, K)``.

        ``labelled_only`` draws every slice from the labelled pool whatever ``labelled_fraction``
        is (the supervised warm-up of a MedCL run).
        """
        n_unlabelled = 0
        if len(self.unlabelled) and self.labelled_fraction < 1 and not labelled_only:
            n_unlabelled = batch_size - max(1, round(self.labelled_fraction * batch_size))
        picks = torch.cat([self._draw(self.labelled, batch_size - n_unlabelled),
                           self._draw(self.unlabelled, n_unlabelled)])
        forced = self._balance(picks, batch_size - n_unlabelled)
        images, labels, tags = [], [], []
        for (ci, z), k in zip(picks.tolist(), forced):
            if k is not None:
                case = self.cases[ci]
                img, lab = self._balanced_crop(case, z, k, self._labels(case, z))
            else:
                img, lab = self.crop(ci, z)
            images.append(img)
            labels.append(lab)
            tags.append(self.cases[ci].tags[z])
        return {"image": torch.stack(images), "labels": torch.stack(labels),
                "tags": torch.stack(tags)}

    def drawable(self) -> list[tuple[int, int]]:
        """Every ``(case index, slice)`` a batch may hold (the unlabelled pool only when
        ``labelled_fraction < 1``)."""
        pools = [self.labelled] + ([self.unlabelled] if self.labelled_fraction < 1 else [])
        return [tuple(p) for pool in pools for p in pool.tolist()]

    def _labels(self, case: PreparedCase, z: int) -> torch.Tensor:
        """Slice ``z``'s labels ``(H, W)`` int64 (all ``ignore_index`` for an unlabelled case)."""
        if case.labels is not None:
            return case.labels[z].long()
        return torch.full(case.image.shape[-2:], self.ignore_index, dtype=torch.long)

    def crop(self, ci: int, z: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The crop of slice ``z`` of case ``ci`` as :meth:`sample` draws it: ``image (C, h, w)``,
        ``labels (h, w)`` (the same every time with ``crop_mode="center"``)."""
        case = self.cases[ci]
        lab = self._labels(case, z)
        if self.crop_mode == "center":
            return center_crop_or_pad(case.image[z], lab, self.crop_size,
                                      ignore_index=self.ignore_index)
        return random_crop(case.image[z], lab, self.crop_size, ignore_index=self.ignore_index,
                           generator=self.generator)
