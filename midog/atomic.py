"""The one way this project writes a file: readers see the old file or the new one,
never half of one, even if the writer is killed mid-write.

Every writer goes through `atomic_path`: the data goes to a temporary file in the
destination's own folder (so the final rename never crosses a file system), is flushed
to disk, and is renamed over the destination only when the writer finished without an
error. On any error, KeyboardInterrupt included, the temporary file is removed.

Writers that take a path rather than bytes (torch.save, matplotlib's savefig, tifffile,
csv through open()) use `atomic_path` directly. A temporary file is named
`.<name>.<random>.tmp`, hidden and unique per writer; `keep_extension` puts the
destination's extension back at the end for matplotlib, which picks the format from it.

A failed write (disk full, read-only, I/O error) is a `WriteError` naming the file and the
cause. `remove_stale_temp` clears what a killed writer left, never a live writer's file;
`output_lock` keeps a second run off an output folder that a run is writing.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import UsageError, WriteError

# mkstemp creates files readable by the owner only; outputs are meant to be shared
# (Grand Challenge reads them as another user), as a plain open() would make them.
FILE_MODE = 0o644


@contextmanager
def atomic_path(path: str | os.PathLike, keep_extension: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path` to write; when the block ends without an
    error it replaces `path` atomically, else it is removed. Creates the parent folder.

    `path` itself is never followed: a symbolic link planted there is replaced by the new
    file, its target untouched. Any OSError (disk full, read-only, I/O error) comes out as a
    WriteError naming `path` and the cause. While the block runs, the temporary file is
    locked (flock), so `remove_stale_temp` of another run never removes it."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        suffix = ".tmp" + (path.suffix if keep_extension else "")
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    except OSError as exc:
        raise WriteError(path, exc) from None
    tmp = Path(name)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield tmp
        _fsync(tmp)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and not isinstance(exc, WriteError):
            raise WriteError(path, exc) from None
        raise
    finally:
        os.close(fd)


def remove_stale_temp(targets: list[Path]) -> None:
    """Temporary files that a killed run left beside these outputs (`.<name>.*.tmp`): only
    ours, by name, and only those no live writer holds (a concurrent run's stay)."""
    for target in targets:
        for tmp in target.parent.glob(f".{target.name}.*.tmp"):
            try:
                fd = os.open(tmp, os.O_RDONLY | os.O_NOFOLLOW)
            except OSError:
                continue  # gone already, or a link: not ours
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # its writer is alive
            finally:
                os.close(fd)
            tmp.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    # After a crash the rename could otherwise reach the disk before the data does.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write `text` to `path` atomically; returns the path."""
    return write_bytes_atomic(path, text.encode(encoding))


def write_json_atomic(path: str | os.PathLike, obj: Any, **dumps_kwargs: Any) -> Path:
    """Write `obj` as JSON (json.dumps with `dumps_kwargs`) atomically; returns the path."""
    return write_text_atomic(path, json.dumps(obj, **dumps_kwargs))


LOCK_NAME = ".midog.lock"


@contextmanager
def output_lock(folder: str | os.PathLike) -> Iterator[Path]:
    """Hold an exclusive lock (flock) on `folder`/.midog.lock for the block: a second run on
    the same output folder is refused with a UsageError naming the folder and the holder's
    pid, instead of interleaving its results and report with the first's. The lock goes
    with the process, however it ends; the empty lock file stays (removing it would race
    with the next run taking it). Creates the folder."""
    folder = Path(folder)
    lock = folder / LOCK_NAME
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # O_NOFOLLOW: a link planted under the lock's name is refused, never followed.
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
    except OSError as exc:
        raise UsageError(f"cannot lock the output folder {folder}: {exc.strerror or exc} ({lock})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise UsageError(
                f"{folder}: another midog run (pid {holder}) is writing to this output folder; wait for it to finish or choose another"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield lock
    finally:
        os.close(fd)
