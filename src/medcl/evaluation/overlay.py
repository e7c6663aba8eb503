"""PNG overlays of predictions and ground truth on slices, readable by a person.

Each PNG shows one slice ``z`` of the image in grayscale, in radiological orientation from the
volume's affine and upsampled to at least 512 pixels on its long side
(:mod:`medcl.evaluation.display`), with

* the prediction as a translucent fill per class and the ground truth as a contour per class in
  the same colour;
* a title band on top: case, slice index, why the slice was chosen, and (with both prediction
  and ground truth) the Dice of each class present on that slice;
* a legend band below: a colour swatch and the name of each class, and what fill and outline
  mean; the patient-direction letters (R/L, A/P, S/I) at the image edges.

Slices per case: the ``num_slices`` slices with the most foreground (ground truth, else
prediction), plus the slice with the worst mean Dice when both are given.
"""

from __future__ import annotations

import glob
import logging
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from PIL.PngImagePlugin import PngInfo
from scipy import ndimage

from medcl.evaluation.display import (
    MIN_LONG_SIDE,
    DisplayLayout,
    display_layout,
    display_size,
    upsample_image,
    upsample_labels,
    voxel_spacing,
)
from medcl.evaluation.metrics import BACKGROUND_VALUE, dice
from medcl.files import atomic_path

log = logging.getLogger(__name__)

#: RGB colours of the foreground classes, in ``class_values`` order, cycled if there are more.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75),    # red
    (60, 180, 75),    # green
    (0, 130, 200),    # blue
    (255, 225, 25),   # yellow
    (145, 30, 180),   # purple
    (70, 240, 240),   # cyan
    (245, 130, 48),   # orange
    (240, 50, 230),   # magenta
)
#: opacity of the filled prediction colour (0 = invisible, 1 = opaque).
PRED_ALPHA = 0.4
#: intensity percentiles mapped to black and white.
WINDOW_PERCENTILES = (1.0, 99.0)
#: thickness in display pixels of the ground-truth contour.
CONTOUR_WIDTH = 2
#: digits of the slice index in an overlay's file name (``{case}_z007.png``).
SLICE_DIGITS = 3
FONT_SIZE = 16
#: space in pixels around text and between legend items.
MARGIN = 8
SWATCH = 16
TEXT_COLOUR = (255, 255, 255)
BAND_COLOUR = (24, 24, 24)
#: the PNG is at least this wide (a narrow slice is centred), so title and legend have room.
MIN_FIGURE_WIDTH = MIN_LONG_SIDE
#: where a title line may wrap.
TITLE_SEPARATOR = "   "
ROLE_FOREGROUND = "most foreground"
ROLE_WORST = "worst Dice"
#: PNG text keys: the title, and the ``left,top,right,bottom`` pixel boxes of image and legend.
PNG_TITLE = "Title"
PNG_PANEL_BOX = "medcl:panel_box"
PNG_LEGEND_BOX = "medcl:legend_box"
_MAX_GRAY = 255.0


def class_colours(class_values: Mapping[str, int]) -> dict[int, tuple[int, int, int]]:
    """Label value -> RGB colour for each foreground class (value 0, the background, is skipped)."""
    values = [int(v) for v in class_values.values() if int(v) != BACKGROUND_VALUE]
    return {v: PALETTE[i % len(PALETTE)] for i, v in enumerate(values)}


def window(image: np.ndarray) -> np.ndarray:
    """Scale ``image`` to ``[0, 1]`` between its 1st and 99th percentiles (clipped)."""
    lo, hi = np.percentile(image, WINDOW_PERCENTILES)
    if hi <= lo:
        return np.zeros(image.shape, dtype=np.float64)
    return np.clip((image - lo) / (hi - lo), 0.0, 1.0)


def _foreground_per_slice(labels: np.ndarray, values: list[int]) -> np.ndarray:
    return np.isin(labels, values).sum(axis=(0, 1))


def pick_slices(num_slices: int, depth: int, gt: np.ndarray | None, pred: np.ndarray | None,
                values: list[int]) -> list[int]:
    """Indices along ``Z`` to show, ascending.

    The ``num_slices`` slices with the most ground-truth foreground; if there is none, those with
    the most predicted foreground; if there is none either, evenly spaced slices.
    """
    count = min(num_slices, depth)
    for labels in (gt, pred):
        if labels is None:
            continue
        per_slice = _foreground_per_slice(labels, values)
        if per_slice.any():
            order = np.argsort(-per_slice, kind="stable")
            return sorted(int(z) for z in order[:count])
    # centres of ``count`` equal parts of the stack
    return sorted({int((i + 0.5) * depth / count) for i in range(count)})


def slice_dice(pred: np.ndarray, gt: np.ndarray, values: Sequence[int]) -> dict[int, float]:
    """Dice per class value on one slice ``(X, Y)``, for the classes present in either map."""
    return {v: dice(pred == v, gt == v) for v in values if (pred == v).any() or (gt == v).any()}


def worst_dice_slice(pred: np.ndarray, gt: np.ndarray, values: Sequence[int]) -> int | None:
    """The slice ``z`` with the lowest mean :func:`slice_dice`; ``None`` if no slice has any
    foreground. Ties go to the lowest ``z``."""
    scores = [(np.mean(list(d.values())), z) for z in range(gt.shape[2])
              if (d := slice_dice(pred[:, :, z], gt[:, :, z], values))]
    return min(scores)[1] if scores else None


def choose_slices(num_slices: int, pred: np.ndarray | None, gt: np.ndarray | None,
                  values: list[int], depth: int) -> dict[int, str]:
    """Slice index -> why it is shown (:data:`ROLE_FOREGROUND` or :data:`ROLE_WORST`), by ``z``."""
    roles = {z: ROLE_FOREGROUND for z in pick_slices(num_slices, depth, gt, pred, values)}
    if pred is not None and gt is not None:
        worst = worst_dice_slice(pred, gt, values)
        if worst is not None:
            roles[worst] = ROLE_WORST if worst not in roles else f"{roles[worst]}, {ROLE_WORST}"
    return dict(sorted(roles.items()))


def render_slice(gray: np.ndarray, pred: np.ndarray | None, gt: np.ndarray | None,
                 colours: Mapping[int, tuple[int, int, int]]) -> np.ndarray:
    """Compose one screen image as RGB: translucent prediction fill, ground-truth contours.

    Args:
        gray: windowed intensities in ``[0, 1]``, shape ``(rows, cols)`` as displayed.
        pred: predicted label values ``(rows, cols)`` or ``None``.
        gt: ground-truth label values ``(rows, cols)`` or ``None``.
        colours: label value -> RGB colour.

    Returns:
        ``uint8`` array ``(rows, cols, 3)``.
    """
    rgb = np.repeat(gray[..., None] * _MAX_GRAY, 3, axis=-1)
    for value, colour in colours.items():
        colour = np.asarray(colour, dtype=np.float64)
        if pred is not None:
            mask = pred == value
            rgb[mask] = (1.0 - PRED_ALPHA) * rgb[mask] + PRED_ALPHA * colour
        if gt is not None:
            mask = gt == value
            rgb[mask & ~ndimage.binary_erosion(mask, iterations=CONTOUR_WIDTH)] = colour
    return np.rint(rgb).astype(np.uint8)


def _font() -> ImageFont.ImageFont:
    return ImageFont.load_default(size=FONT_SIZE)


def _line_height(font) -> int:
    return font.getbbox("Ag")[3] + MARGIN // 2


def _wrap_title(lines: list[str], width: int, font) -> list[str]:
    """Split title lines at their :data:`TITLE_SEPARATOR` s so that each fits in ``width``."""
    wrapped = []
    for line in lines:
        current = ""
        for part in line.split(TITLE_SEPARATOR):
            joined = f"{current}{TITLE_SEPARATOR}{part}" if current else part
            if current and font.getlength(joined) > width - 2 * MARGIN:
                wrapped.append(current)
                joined = part
            current = joined
        wrapped.append(current)
    return wrapped


def _legend_rows(items: list[tuple[str, tuple[int, int, int] | None]], width: int,
                 font) -> list[list[tuple[int, str, tuple | None]]]:
    """Wrap legend items (text, swatch colour or None) into rows of ``(x, text, colour)``."""
    rows: list[list[tuple[int, str, tuple | None]]] = [[]]
    x = MARGIN
    for text, colour in items:
        item_width = (SWATCH + MARGIN // 2 if colour else 0) + int(font.getlength(text))
        if rows[-1] and x + item_width > width - MARGIN:
            rows.append([])
            x = MARGIN
        rows[-1].append((x, text, colour))
        x += item_width + 2 * MARGIN
    return rows


def compose_figure(panel: np.ndarray, title_lines: list[str],
                   legend: list[tuple[str, tuple[int, int, int] | None]],
                   edges: tuple[str, str, str, str]) -> tuple[Image.Image, PngInfo]:
    """The PNG: title band, the panel ``(rows, cols, 3)`` with edge letters, legend band.

    ``legend`` items are ``(text, colour)``: a swatch of ``colour`` then the text, or the text
    alone when ``colour`` is ``None``. ``edges`` are the letters at (top, bottom, left, right).

    Returns:
        The image and its PNG text chunks: the title and the panel and legend boxes.
    """
    font = _font()
    height, panel_w = panel.shape[:2]
    width = max(panel_w, MIN_FIGURE_WIDTH)  # room for title and legend beside a narrow slice
    x0 = (width - panel_w) // 2
    line = _line_height(font)
    title_lines = _wrap_title(title_lines, width, font)
    legend_rows = _legend_rows(legend, width, font)
    title_h = MARGIN + line * len(title_lines)
    legend_h = MARGIN + max(line, SWATCH + MARGIN // 2) * len(legend_rows)
    figure = Image.new("RGB", (width, title_h + height + legend_h), BAND_COLOUR)
    figure.paste(Image.fromarray(panel), (x0, title_h))
    draw = ImageDraw.Draw(figure)
    for i, text in enumerate(title_lines):
        draw.text((MARGIN, MARGIN // 2 + i * line), text, fill=TEXT_COLOUR, font=font)
    top, bottom, left, right = edges
    half_w, half_h = x0 + panel_w // 2, title_h + height // 2
    draw.text((half_w, title_h + MARGIN), top, fill=TEXT_COLOUR, font=font, anchor="mt")
    draw.text((half_w, title_h + height - MARGIN), bottom, fill=TEXT_COLOUR, font=font, anchor="mb")
    draw.text((x0 + MARGIN, half_h), left, fill=TEXT_COLOUR, font=font, anchor="lm")
    draw.text((x0 + panel_w - MARGIN, half_h), right, fill=TEXT_COLOUR, font=font, anchor="rm")
    y0 = title_h + height + MARGIN // 2
    row_h = max(line, SWATCH + MARGIN // 2)
    for r, row in enumerate(legend_rows):
        y = y0 + r * row_h
        for x, text, colour in row:
            if colour is not None:
                draw.rectangle((x, y, x + SWATCH - 1, y + SWATCH - 1), fill=tuple(colour))
                x += SWATCH + MARGIN // 2
            draw.text((x, y + SWATCH // 2), text, fill=TEXT_COLOUR, font=font, anchor="lm")
    info = PngInfo()
    info.add_text(PNG_TITLE, " / ".join(title_lines))
    info.add_text(PNG_PANEL_BOX, f"{x0},{title_h},{x0 + panel_w},{title_h + height}")
    info.add_text(PNG_LEGEND_BOX, f"0,{title_h + height},{width},{figure.height}")
    return figure, info


def _title(case_id: str, z: int, depth: int, role: str, dices: Mapping[int, float] | None,
           names: Mapping[int, str]) -> list[str]:
    lines = [TITLE_SEPARATOR.join((case_id, f"slice z={z} (of {depth})", role))]
    if dices is not None:
        scores = (TITLE_SEPARATOR.join(f"{names[v]} {d:.3f}" for v, d in dices.items())
                  or "no foreground")
        lines.append(f"Dice on this slice: {scores}")
    return lines


def _legend(names: Mapping[int, str], colours: Mapping[int, tuple[int, int, int]],
            has_pred: bool, has_gt: bool) -> list[tuple[str, tuple[int, int, int] | None]]:
    items: list[tuple[str, tuple[int, int, int] | None]] = [
        (names[v], colours[v]) for v in colours]
    key = [k for k, present in (("fill = prediction", has_pred), ("outline = ground truth", has_gt))
           if present]
    if key:
        items.append(("; ".join(key), None))
    return items


def _check_inputs(image: np.ndarray, pred, gt, num_slices: int) -> np.ndarray:
    if isinstance(num_slices, bool) or not isinstance(num_slices, int) or num_slices < 1:
        raise ValueError(f"num_slices must be a positive integer, got {num_slices!r}")
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 3 or 0 in image.shape:
        raise ValueError(f"image must be a non-empty (X, Y, Z) array, got shape {image.shape}")
    for name, labels in (("pred", pred), ("gt", gt)):
        if labels is not None and np.shape(labels) != image.shape:
            raise ValueError(f"{name} shape {np.shape(labels)} differs from image {image.shape}")
    return image


def _display(layout: DisplayLayout, plane: np.ndarray | None, size, *, labels: bool):
    if plane is None:
        return None
    screen = layout.apply(plane)
    return upsample_labels(screen, size) if labels else upsample_image(screen, size)


def overlay_name(case_id: str, z: int) -> str:
    """The file name of a case's overlay of slice ``z``."""
    return f"{case_id}_z{z:0{SLICE_DIGITS}d}.png"


def overlay_files(out_dir: str | os.PathLike, case_id: str) -> list[Path]:
    """The overlay PNGs of ``case_id`` in ``out_dir`` (any slice), sorted."""
    pattern = glob.escape(case_id) + "_z" + "[0-9]" * SLICE_DIGITS + ".png"
    return sorted(Path(out_dir).glob(pattern))


def save_overlays(image: np.ndarray, pred: np.ndarray | None, gt: np.ndarray | None,
                  out_dir: str | os.PathLike, case_id: str, class_values: Mapping[str, int],
                  num_slices: int = 1, *, affine: np.ndarray | None = None) -> list[Path]:
    """Write overlay PNGs of one case (module docstring for what they show).

    Args:
        image: intensities ``(X, Y, Z)``, any float scale (windowed to its 1-99 percentiles).
        pred: predicted label volume ``(X, Y, Z)`` with on-disk values, or ``None``.
        gt: ground-truth label volume ``(X, Y, Z)`` with on-disk values, or ``None``.
        out_dir: folder for the PNGs (created if missing).
        case_id: in the title and the file names ``{case_id}_z{index:03d}.png``.
        class_values: class name -> label value; each foreground class gets a palette colour.
        num_slices: slices with the most foreground to write; the worst-Dice slice is added.
        affine: ``(4, 4)`` RAS voxel-to-world matrix of the volume, for the orientation and the
            pixel aspect; ``None`` means the identity (voxel axes are R, A, S; 1 mm voxels).

    Returns:
        The written PNG paths, in slice order.

    Raises:
        ValueError: ``image`` is not 3D, a label volume's shape differs, or ``num_slices < 1``.
    """
    image = _check_inputs(image, pred, gt, num_slices)
    affine = np.eye(4) if affine is None else np.asarray(affine, dtype=np.float64)
    colours = class_colours(class_values)
    names = {int(v): n for n, v in class_values.items()}
    layout = display_layout(affine)
    pixel_mm = layout.pixel_mm(voxel_spacing(affine)[:2])
    screen_shape = layout.apply(image[:, :, 0]).shape
    size = display_size(screen_shape, pixel_mm)
    legend = _legend(names, colours, pred is not None, gt is not None)
    gray = window(image)
    out_dir = Path(out_dir)
    written = []
    depth = image.shape[2]
    for z, role in choose_slices(num_slices, pred, gt, list(colours), depth).items():
        planes = [None if v is None else v[:, :, z] for v in (pred, gt)]
        dices = (slice_dice(*planes, list(colours))
                 if all(p is not None for p in planes) else None)
        panel = render_slice(_display(layout, gray[:, :, z], size, labels=False),
                             *(_display(layout, p, size, labels=True) for p in planes), colours)
        title = _title(case_id, z, depth, role, dices, names)
        figure, info = compose_figure(panel, title, legend, layout.edges)
        path = out_dir / overlay_name(case_id, z)
        with atomic_path(path) as tmp:
            figure.save(tmp, format="PNG", pnginfo=info)
        written.append(path)
    log.info("case %s: wrote %d overlay PNGs to %s", case_id, len(written), out_dir)
    return written
