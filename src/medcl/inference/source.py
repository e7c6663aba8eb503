"""What a predictor is loaded from: a run folder, a checkpoint file in one, or a model file
written by ``medcl export`` (:mod:`medcl.runtime.model_file`); each read as the checkpoint
fields a :class:`~medcl.inference.predictor.Predictor` is built from, with its post-processing.
"""

from __future__ import annotations

import os
from pathlib import Path

from medcl.data.labels import LabelSpec
from medcl.inference.postprocessing import (
    POSTPROCESSING_FILE,
    Postprocessing,
    check_postprocessing_mode,
    read_postprocessing,
)
from medcl.runtime.checkpoint import CHECKPOINT_DIR, find_checkpoint, load_checkpoint
from medcl.runtime.model_file import is_model_file, model_file_checkpoint


def read_source(source: str | os.PathLike, *, checkpoint: str = "best",
                postprocessing: str = "auto", model_file: bool | None = None
                ) -> tuple[dict, Path, Postprocessing | None]:
    """``(checkpoint fields, the file read, its post-processing)`` of ``source``.

    Args:
        source: a run folder (``checkpoint`` picks ``best``, falling back to ``last``), a
            checkpoint file, or a model file.
        postprocessing: ``auto``: the run's ``postprocessing.json`` or the model file's
            (``None`` where a checkpoint has no run folder); ``none``: ``None``.
        model_file: ``True``: ``source`` must be a model file; ``None``: decide by the file.

    Raises:
        ConfigError: an unknown ``postprocessing`` mode.
        DataError: nothing readable at ``source`` (a damaged or foreign model file included).
    """
    check_postprocessing_mode(postprocessing)
    path = Path(source)
    if model_file or (model_file is None and is_model_file(path)):
        state = model_file_checkpoint(path)
        if postprocessing != "auto":
            return state, path, None
        spec = LabelSpec.from_dict(state["label_spec"], source=str(path))
        return state, path, Postprocessing.from_dict(
            state["postprocessing"], spec.class_names, source=f"{path}:{POSTPROCESSING_FILE}")
    folder = path.parent.parent if path.parent.name == CHECKPOINT_DIR else path
    path = find_checkpoint(path, checkpoint)
    state = load_checkpoint(path)
    if postprocessing != "auto" or not folder.is_dir():
        return state, path, None
    spec = LabelSpec.from_dict(state["label_spec"], source=str(path))
    return state, path, read_postprocessing(folder, spec.class_names)
