"""Small file helpers: atomic writes (nothing is ever half-written), output checks made before
any work starts, a rescue for results whose write fails late, and hashing."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

__all__ = ["OutputRescued", "atomic_path", "atomic_write_json", "atomic_write_text", "check_output",
           "save_or_rescue", "sha256_file"]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    On an exception the temporary file is removed and ``path`` is left untouched, so a reader
    sees either the old file or the complete new one, never a partial write.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600 files; give the result the permissions of an ordinary new file
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented, key-sorted JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _nearest_existing(path: Path) -> Path:
    for parent in path.parents:
        if parent.exists():
            return parent
    return Path(path.anchor or ".")


def check_output(path: str | os.PathLike[str], *, kind: Literal["file", "folder"] = "file",
                 suffixes: Sequence[str] | None = None, name: str = "--out") -> Path:
    """Check that an output can be written, before any work that would be lost if it cannot.

    Parameters
    ----------
    path : path
        The requested output.
    kind : {"file", "folder"}
        What ``path`` must be when it already exists.
    suffixes : sequence of str, optional
        Allowed file suffixes (lower case, with the dot).
    name : str
        The parameter named in the message (``--out``, ``--figure``).

    Returns
    -------
    Path
        ``path``, unchanged.

    Raises
    ------
    ValueError
        One line: a folder where a file is wanted (or the reverse), a parent that is a file, a
        folder that cannot be written (read-only, no permission), a wrong suffix.

    Notes
    -----
    Writability is tested by creating and removing a temporary file in the nearest folder that
    exists (``os.access`` is not reliable for root or on network mounts); missing folders are
    not created here.
    """
    path = Path(path).expanduser()
    if path.exists():
        if kind == "file" and path.is_dir():
            raise ValueError(f"The {name} path {str(path)!r} is a folder; expected a file name.")
        if kind == "folder" and not path.is_dir():
            raise ValueError(f"The {name} path {str(path)!r} exists and is not a folder.")
    if kind == "file" and suffixes is not None and path.suffix.lower() not in suffixes:
        raise ValueError(f"The {name} file {str(path)!r} must end in {' or '.join(suffixes)}.")
    base = path if kind == "folder" and path.is_dir() else _nearest_existing(path)
    if not base.is_dir():
        raise ValueError(f"The {name} path {str(path)!r} lies under {str(base)!r}, which is a file, "
                         f"not a folder.")
    try:
        fd, probe = tempfile.mkstemp(prefix=".bnprobe-write-test-", dir=base)
    except OSError as exc:
        raise ValueError(f"The {name} path {str(path)!r} cannot be written: folder {str(base)!r} is "
                         f"not writable ({exc.strerror or exc}). Choose another location.") from None
    os.close(fd)
    os.unlink(probe)
    return path


class OutputRescued(OSError):
    """A result could not be written where requested and was saved elsewhere (``.rescued``)."""

    def __init__(self, requested: Path, rescued: Path, reason: str) -> None:
        super().__init__(f"could not write {str(requested)!r} ({reason}); the result was saved to "
                         f"{str(rescued)!r} instead")
        self.requested, self.rescued = requested, rescued


def save_or_rescue(write: Callable[[Path], Any], path: str | os.PathLike[str]) -> Path:
    """``write(path)``; if that fails with an OSError, save the result elsewhere rather than lose it.

    The rescue goes next to the requested file (``NAME.rescued-PID.SUFFIX``) or, if that folder
    is not writable either, into a new temporary folder.

    Returns
    -------
    Path
        ``path`` when the write succeeded.

    Raises
    ------
    OutputRescued
        Naming the requested path, the reason and where the result was saved.
    """
    path = Path(path)
    try:
        write(path)
        return path
    except OSError as exc:
        reason = (exc.strerror or str(exc)) + (f": {exc.filename}" if exc.filename else "")
        places: list[Callable[[], Path]] = [
            lambda: path.with_name(f"{path.stem}.rescued-{os.getpid()}{path.suffix}"),
            lambda: Path(tempfile.mkdtemp(prefix="bnprobe-rescued-")) / path.name]
        for place in places:
            try:
                target = place()
                write(target)
            except OSError:
                continue
            raise OutputRescued(path, target, reason) from None
        raise
