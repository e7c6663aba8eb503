"""Which files medcl wrote: a record per output folder, so that ``--overwrite`` replaces or
removes only medcl's own files, never the user's.

Every command that writes into a folder the user names (``predict``, ``evaluate``, ``convert``,
``scribble``, ``train``, ``demo``, the synthetic generator) records the files it writes there in
the folder's record ``FOLDER/.medcl-outputs.jsonl``: one JSON object a line,
``{"path": "probs/a.nii.gz", "by": "predict"}``, the path relative to the folder. A file is
medcl's only if its folder's record names it. Anything else (the user's notes, another tool's
files, files an older medcl wrote before records existed) is never replaced or removed: where a
command would write over it, it refuses and names it (:meth:`OutputFolder.check`); where a
command clears its own files (``demo --overwrite``, the stale cases of an earlier ``convert``),
it is left in place and named in a warning (:meth:`OutputFolder.release`).

Files are recorded right after they are written, each line with one ``write`` to the record
opened for appending: a line cut by a kill is skipped when the record is read, and the file it
named, like one written just before a kill, counts as not medcl's (refused, never removed).
Removing entries rewrites the record through a temporary file and a rename. Several processes
may record into one folder (``predict`` shards writing one output folder); clearing a folder
while another process writes into it is not supported.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path, PurePosixPath
from typing import Iterable

from medcl.errors import DataError
from medcl.files import DEFAULT_FILE_MODE, atomic_write_text, paths_overlap, write_error

log = logging.getLogger(__name__)

#: the record of the files medcl wrote in a folder (hidden: never read as a case).
MANIFEST_NAME = ".medcl-outputs.jsonl"
#: files named in a message before "and N more".
NAMED_FILES = 3


def check_output_outside(input_path: str | os.PathLike, output_dir: str | os.PathLike) -> None:
    """Refuse an output folder that is, holds or lies inside the input (symlinks resolved).

    Raises:
        DataError: naming both paths.
    """
    if paths_overlap(input_path, output_dir):
        raise DataError(f"{output_dir}: the output folder is, holds or lies inside the input "
                        f"{input_path}; choose an output folder outside it")


def _named(paths: list[Path]) -> str:
    """``a, b, c and 4 more``: the first :data:`NAMED_FILES` of ``paths`` and a count."""
    shown = ", ".join(str(p) for p in paths[:NAMED_FILES])
    return shown + (f" and {len(paths) - NAMED_FILES} more" if len(paths) > NAMED_FILES else "")


def _more(paths: list[Path]) -> str:
    return f" ({len(paths) - 1} more such files)" if len(paths) > 1 else ""


def _inside(key: str) -> bool:
    """A recorded path names a file inside its folder (an edited record cannot point outside)."""
    parts = PurePosixPath(key).parts
    return bool(parts) and not PurePosixPath(key).is_absolute() and ".." not in parts


def _line(key: str, by: str) -> str:
    return json.dumps({"path": key, "by": by}) + "\n"


class OutputFolder:
    """A folder medcl writes into and the record of the files it wrote there.

    Args:
        folder: the output folder (created by the first :meth:`record`).
        by: the writer recorded with each file (``"predict"``, ``"convert"``, ...).
    """

    def __init__(self, folder: str | os.PathLike, by: str) -> None:
        self.folder = Path(folder)
        self.by = by
        self.manifest = self.folder / MANIFEST_NAME
        self._entries: dict[str, str] | None = None  # recorded path -> writer

    def key(self, path: str | os.PathLike) -> str:
        """``path`` relative to the folder, as recorded (``probs/a.nii.gz``).

        Raises:
            ValueError: ``path`` is not inside the folder.
        """
        return Path(os.path.abspath(path)).relative_to(os.path.abspath(self.folder)).as_posix()

    def holds(self, path: str | os.PathLike) -> bool:
        """Whether ``path`` lies inside the folder (by name, symlinks not resolved)."""
        top = os.path.abspath(self.folder)
        return os.path.commonpath([top, os.path.abspath(path)]) == top

    def recorded(self) -> dict[str, str]:
        """The recorded paths (relative) and their writers; lines cut by a kill are skipped."""
        if self._entries is None:
            self._entries = {}
            try:
                lines = self.manifest.read_text(encoding="utf-8").splitlines()
            except FileNotFoundError:
                lines = []
            for line in lines:
                try:
                    entry = json.loads(line)
                except ValueError:  # cut by a kill: the file it named is not counted as medcl's
                    continue
                path = entry.get("path") if isinstance(entry, dict) else None
                if isinstance(path, str) and _inside(path):
                    self._entries[path] = str(entry.get("by", ""))
        return self._entries

    def owns(self, path: str | os.PathLike) -> bool:
        """Whether the record names ``path``."""
        return self.key(path) in self.recorded()

    def check(self, paths: Iterable[str | os.PathLike], *, overwrite: bool,
              hint: str = "pass --overwrite to replace them") -> list[Path]:
        """Refuse to write ``paths`` (files in this folder) over anything but medcl's own files.

        Call it before the work, with every file the work will write.

        Returns:
            the paths that exist (medcl's own), which the writes will replace.

        Raises:
            DataError: a path exists that medcl did not write (never replaced, whatever
                ``overwrite``), or medcl's own output exists and ``overwrite`` is off (the
                message ends with ``hint``).
        """
        existing = [Path(p) for p in paths if Path(p).exists() or Path(p).is_symlink()]
        foreign = [p for p in existing if not self.owns(p)]
        if foreign:
            raise DataError(f"{foreign[0]}: exists and was not written by medcl (it is not in "
                            f"{self.manifest}){_more(foreign)}; medcl never replaces such a file: "
                            "move it away or choose another output folder")
        if existing and not overwrite:
            raise DataError(f"{existing[0]}: output already exists ({len(existing)} files); {hint}")
        return existing

    def record(self, paths: Iterable[str | os.PathLike]) -> None:
        """Record ``paths`` (files in this folder medcl has just written, or sub-folders it
        created) as medcl's, with one append to the record.

        Raises:
            WriteError: the record cannot be written.
        """
        own = self.recorded()
        keys = sorted({self.key(p) for p in paths} - set(own))
        if not keys:
            return
        lines = "".join(_line(k, self.by) for k in keys).encode("utf-8")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.manifest, os.O_RDWR | os.O_APPEND | os.O_CREAT, DEFAULT_FILE_MODE)
            try:
                size = os.fstat(fd).st_size
                if size and os.pread(fd, 1, size - 1) != b"\n":  # after a line cut by a kill
                    lines = b"\n" + lines
                os.write(fd, lines)
            finally:
                os.close(fd)
        except OSError as exc:
            raise write_error(self.manifest, exc) from exc
        own.update(dict.fromkeys(keys, self.by))

    def foreign(self) -> list[Path]:
        """Files below this folder that its record does not name.

        Hidden files (never read as cases) and recorded sub-folders (each with its own record)
        are not listed.
        """
        own, found = self.recorded(), []
        for dirpath, dirnames, filenames in os.walk(self.folder):
            base = Path(dirpath)
            dirnames[:] = sorted(d for d in dirnames
                                 if not d.startswith(".") and self.key(base / d) not in own)
            found += [base / f for f in sorted(filenames)
                      if not f.startswith(".") and self.key(base / f) not in own]
        return found

    def release(self, keep: Iterable[str | os.PathLike] = ()) -> list[Path]:
        """Remove medcl's own files in this folder, except ``keep``; leave everything else.

        Folders the removals leave empty go too (never this folder itself); a recorded
        sub-folder (a part of the demo) stays recorded. Files medcl did not write are left in
        place and named in a warning.

        Returns:
            the removed files.
        """
        own = self.recorded()
        kept = {self.key(p) for p in keep} & set(own)
        removed = []
        for key in sorted(set(own) - kept):
            path = self.folder / key
            if path.is_dir() and not path.is_symlink():
                kept.add(key)
            elif path.exists() or path.is_symlink():
                try:
                    path.unlink()
                    self._remove_empty_parents(path)
                except OSError as exc:
                    raise write_error(path, exc) from exc
                removed.append(path)
        if kept != set(own):
            self._rewrite({k: own[k] for k in kept})
        left = self.foreign()
        if left:
            log.warning("%s: left %d file(s) medcl did not write: %s", self.folder, len(left),
                        _named(left))
        return removed

    def replace_layout(self, targets: Iterable[str | os.PathLike]) -> None:
        """Make room for a dataset layout (``convert``, the synthetic generator) of ``targets``.

        Files medcl did not write in the places the layout writes (the top-level folders and
        files of ``targets``: ``imagesTr``, ``dataset.json``, ...) are refused: they would be read
        as part of the dataset. medcl's own files of an earlier layout that ``targets`` does not
        hold again (stale cases) are removed; files elsewhere are left, named in a warning.

        Raises:
            DataError: naming the files in the way.
        """
        targets = list(targets)
        places = {self.key(t).split("/")[0] for t in targets}
        in_the_way = [p for p in self.foreign() if self.key(p).split("/")[0] in places]
        if in_the_way:
            raise DataError(f"{in_the_way[0]}: was not written by medcl, but lies where it "
                            f"writes the dataset {self.folder}{_more(in_the_way)}; it would be "
                            "read as part of it: move it away or choose another output folder")
        self.release(keep=targets)

    def _rewrite(self, entries: dict[str, str]) -> None:
        self._entries = entries
        if not entries:
            self.manifest.unlink(missing_ok=True)
            return
        atomic_write_text(self.manifest, "".join(_line(k, entries[k]) for k in sorted(entries)))

    def _remove_empty_parents(self, path: Path) -> None:
        top = Path(os.path.abspath(self.folder))
        folder = Path(os.path.abspath(path.parent))
        while folder != top and top in folder.parents and not any(folder.iterdir()):
            folder.rmdir()
            folder = folder.parent
