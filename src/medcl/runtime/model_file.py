"""The shared model file (``model.medcl``): one zip that holds what predicting and fine-tuning
need and nothing of the training images, with a sha256 of every member.

Members (``docs/share.md`` describes each field):

* ``manifest.json``: ``{"format": "medcl-model", "format_version": 1, "members": {name:
  sha256}}``, read first; every other member must be listed and match its sha256;
* ``weights.pt``: the network's state dict (``torch.save``; read with ``weights_only=True``);
* ``model.json``: ``model_kwargs`` (what :func:`medcl.models.build_model` needs), the
  checkpoint it came from and its step;
* ``config.json``: the run's resolved training configuration;
* ``preprocessing.json``: how a volume becomes the network's input slices (informative: the
  predictor derives it from ``config.json`` and ``labels.json`` as it does for a run);
* ``labels.json``: the label definition; ``postprocessing.json``: the chosen post-processing;
* ``training_data.json``: a description of the training data (counts, spacing, channels);
* ``metrics.json``: the validation scores that selected the weights;
* ``about.json``: medcl, torch and python versions, creation time, licence.

The sha256 sums find a damaged or edited member; they are no signature (whoever edits a member
can edit the manifest too): trust a model file as much as whoever handed it to you.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from pathlib import Path

import torch

from medcl.errors import DataError
from medcl.files import atomic_path
from medcl.runtime.checkpoint import read_torch_file

MODEL_SUFFIX = ".medcl"
FORMAT = "medcl-model"
#: the newest format this medcl reads and the one it writes
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
WEIGHTS = "weights.pt"
#: the JSON members, by the key :func:`read_model_file` returns them under
JSON_MEMBERS = {"model": "model.json", "config": "config.json", "labels": "labels.json",
                "preprocessing": "preprocessing.json", "postprocessing": "postprocessing.json",
                "training_data": "training_data.json", "metrics": "metrics.json",
                "about": "about.json"}
_HASH_CHUNK = 1 << 20


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    """The sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def json_bytes(value) -> bytes:
    return (json.dumps(value, indent=1, sort_keys=True) + "\n").encode("utf-8")


def torch_bytes(value) -> bytes:
    """``torch.save`` of ``value`` (tensors and plain data) into bytes."""
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


def has_manifest(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a zip whose manifest names the medcl model format (what medcl
    export wrote; the members are not checked)."""
    try:
        with zipfile.ZipFile(path) as archive:
            manifest = json.loads(archive.read(MANIFEST))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return False
    return isinstance(manifest, dict) and manifest.get("format") == FORMAT


def is_model_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is meant as a model file: the ``.medcl`` suffix, or a zip with a
    medcl manifest (:func:`read_model_file` checks the rest)."""
    path = Path(path)
    return path.is_file() and (path.suffix == MODEL_SUFFIX or has_manifest(path))


def write_model_file(path: str | os.PathLike, *, weights: dict, members: dict[str, object]) -> Path:
    """Write ``weights`` (a state dict) and the JSON ``members`` (keys of :data:`JSON_MEMBERS`)
    with their manifest into the zip ``path``, through a temporary file and a rename.

    Raises:
        ValueError: the member keys are not those of :data:`JSON_MEMBERS`.
        WriteError: the file could not be written.
    """
    if set(members) != set(JSON_MEMBERS):
        raise ValueError(f"a model file holds exactly the members {sorted(JSON_MEMBERS)}, "
                         f"got {sorted(members)}")
    blobs = {WEIGHTS: torch_bytes(weights)}
    blobs.update({JSON_MEMBERS[key]: json_bytes(value) for key, value in members.items()})
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION,
                "members": {name: sha256_bytes(data) for name, data in sorted(blobs.items())}}
    path = Path(path)
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(MANIFEST, json_bytes(manifest))
        for name, data in blobs.items():
            archive.writestr(name, data)
    return path


def _manifest(path: Path, archive: zipfile.ZipFile) -> dict[str, str]:
    """The members' sha256 sums, after checking the manifest's format and version."""
    try:
        manifest = json.loads(archive.read(MANIFEST))
    except KeyError:
        raise DataError(f"{path}: not a medcl model file (the zip has no {MANIFEST}; write "
                        "one with 'medcl export RUN model.medcl')") from None
    except ValueError as exc:
        raise DataError(f"{path}: {MANIFEST} is not JSON ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DataError(f"{path}: not a medcl model file ({MANIFEST} does not name the format "
                        f"{FORMAT!r})")
    version = manifest.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise DataError(f"{path}: {MANIFEST} has no valid format_version (got {version!r})")
    if version > FORMAT_VERSION:
        raise DataError(f"{path}: written in model file format {version}, newer than this medcl "
                        f"reads ({FORMAT_VERSION}); upgrade medcl")
    members = manifest.get("members")
    if not isinstance(members, dict) or not all(isinstance(v, str) for v in members.values()):
        raise DataError(f"{path}: {MANIFEST} has no valid members table")
    return members


def read_model_file(path: str | os.PathLike) -> dict:
    """Read and check a model file: every member listed in the manifest, present and matching
    its sha256, nothing else in the zip.

    Returns:
        ``{"weights": state dict, "sha256": the file's sha256, **{key: JSON value}}`` with the
        keys of :data:`JSON_MEMBERS`.

    Raises:
        DataError: the file is missing, not a zip, not a medcl model file, of a newer format
            version, or a member is missing, unlisted or does not match its sha256.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: model file not found")
    try:
        with zipfile.ZipFile(path) as archive:
            expected = _manifest(path, archive)
            names = set(archive.namelist()) - {MANIFEST}
            required = {WEIGHTS, *JSON_MEMBERS.values()}
            missing = sorted((set(expected) | required) - names)
            unlisted = sorted(names - set(expected))
            if missing or unlisted:
                raise DataError(f"{path}: members missing {missing} or not in {MANIFEST} "
                                f"{unlisted}; the file is damaged or was edited")
            blobs = {name: archive.read(name) for name in sorted(names)}
    except (OSError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a medcl model file (not a readable zip: {exc})") from exc
    for name, data in blobs.items():
        if sha256_bytes(data) != expected[name]:
            raise DataError(f"{path}: member {name} does not match its sha256 in {MANIFEST}; "
                            "the file is damaged or was edited")
    state = {"weights": read_torch_file(io.BytesIO(blobs[WEIGHTS]), f"{path}:{WEIGHTS}"),
             "sha256": sha256_file(path)}
    for key, name in JSON_MEMBERS.items():
        try:
            state[key] = json.loads(blobs[name])
        except ValueError as exc:
            raise DataError(f"{path}: member {name} is not JSON ({exc})") from exc
    return state


def model_file_checkpoint(path: str | os.PathLike) -> dict:
    """A model file read as the checkpoint fields a predictor or a fine-tuning run uses:
    ``model`` (weights), ``config``, ``label_spec``, ``model_kwargs``, ``step``, plus
    ``postprocessing`` (its stored dict) and ``sha256`` (of the file).

    Raises:
        DataError: as :func:`read_model_file`, or a member holds the wrong type.
    """
    state = read_model_file(path)
    model = state["model"]
    fields = {"weights": state["weights"], "config": state["config"],
              "labels": state["labels"], "postprocessing": state["postprocessing"],
              "model": model, "model_kwargs": isinstance(model, dict) and model.get("model_kwargs")}
    wrong = sorted(name for name, value in fields.items() if not isinstance(value, dict))
    if wrong:
        raise DataError(f"{path}: members {wrong} do not hold a JSON object / state dict")
    return {"model": state["weights"], "config": state["config"], "label_spec": state["labels"],
            "model_kwargs": model["model_kwargs"], "step": model.get("step", -1),
            "postprocessing": state["postprocessing"], "sha256": state["sha256"]}
