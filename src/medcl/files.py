"""Atomic file writes: every file medcl writes goes through a temporary file and a rename.

Also what the write path needs around that: a writability probe run before expensive work,
one-line errors (path and free space) for failed writes, files created with the user's umask
(not ``mkstemp``'s 0600), and the removal of medcl's own temporaries left by a killed process.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from medcl.errors import WriteError

#: permissions a new file gets before the umask (what ``open(..., "w")`` uses).
DEFAULT_FILE_MODE = 0o666
#: the name :func:`atomic_path` gives its temporaries: ``.{final name}.{random}.tmp{suffix}``.
TEMPORARY_RE = re.compile(r"^\.(?P<final>.+)\.[A-Za-z0-9_]{8}\.tmp(\.[A-Za-z0-9.]+)?$")
_GIB = 2**30


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def free_space(path: str | os.PathLike) -> str:
    """Free space on the disk holding ``path`` (or its nearest existing parent), e.g.
    ``1.2 GiB``."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return f"{shutil.disk_usage(path).free / _GIB:.1f} GiB"
    except OSError:
        return "unknown"


def write_error(path: str | os.PathLike, exc: BaseException) -> WriteError:
    """A one-line :class:`~medcl.errors.WriteError`: the path, the cause, the free space."""
    reason = " ".join(str(exc).split()) or type(exc).__name__
    return WriteError(f"{path}: cannot write ({type(exc).__name__}: {reason}); "
                     f"{free_space(path)} free on that disk")


def check_writable(folder: str | os.PathLike) -> Path:
    """Prove a file can be written in ``folder`` (a probe file, removed) before expensive work.

    Folders it had to create for the probe are removed again, so a run that fails later leaves
    no trace.

    Raises:
        WriteError: naming the folder, the cause and the free space.
    """
    folder = Path(folder)
    created = missing_folders(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".medcl-write-check.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise write_error(folder, exc) from exc
    finally:
        remove_empty_folders(created)
    return folder


def missing_folders(folder: str | os.PathLike) -> list[Path]:
    """``folder`` and those of its parents that do not exist yet, deepest first: what creating
    ``folder`` will create (and :func:`remove_empty_folders` may take back)."""
    folder = Path(folder)
    return [p for p in (folder, *folder.parents) if not p.exists()]


def remove_empty_folders(folders: list[Path]) -> None:
    """Remove each of ``folders`` (deepest first) that is empty; one that is not (something
    else was written there since) is left with all it holds."""
    for path in folders:
        with contextlib.suppress(OSError):  # not empty or already gone: keep what is there
            path.rmdir()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    The temporary name keeps the final suffix (``.nii.gz`` etc.) so writers that infer the
    format from the name still work. On error the temporary file is removed and ``path`` is
    left untouched; an ``OSError`` (full disk, read-only folder) becomes a
    :class:`~medcl.errors.WriteError` naming ``path`` and the free space. The file gets the
    user's umask, like any other tool's.
    """
    path = Path(path)
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}",
                                   dir=path.parent)
        os.close(fd)
        os.chmod(tmp, DEFAULT_FILE_MODE & ~_umask())
    except OSError as exc:
        raise write_error(path, exc) from exc
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except WriteError:
        raise
    except OSError as exc:
        raise write_error(path, exc) from exc
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` as UTF-8 to ``path`` through a temporary file and a rename."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporaries :func:`atomic_path` left in ``folder`` when a process was killed.

    Only files named like medcl's own temporaries (``.{name}.{8 chars}.tmp{suffix}``) go;
    nothing else is touched. Call it only where no other medcl process is writing.

    Returns:
        the removed paths.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [p for p in folder.iterdir() if p.is_file() and TEMPORARY_RE.match(p.name)]
    for path in stale:
        path.unlink()
    return stale


def paths_overlap(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether ``a`` and ``b`` are the same path or one lies inside the other (symlinks
    resolved)."""
    a, b = Path(a).resolve(), Path(b).resolve()
    return a == b or a in b.parents or b in a.parents
