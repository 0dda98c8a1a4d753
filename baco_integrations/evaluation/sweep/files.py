"""How the sweep touches its output directory: no writes through links, one sweep at a time.

A symbolic link planted in the output directory (``metrics.csv -> ~/.bashrc``) must not
redirect the sweep's writes, so every file is opened with ``O_NOFOLLOW`` and checked to be a
plain file with no other hard link; tables and plots are written to a fresh temporary file
beside their destination and renamed over it (a rename replaces a name, it never writes into
the file a link points to). The directory itself must not be a link either.

Two sweeps on one directory would both append the same batches and rewrite the same tables,
so :func:`lock_output_dir` takes an exclusive ``flock`` on ``<output_dir>/.sweep.lock`` for
the whole run. The lock belongs to the open file, so the kernel drops it when the process
ends, however it ends: a stale lock file left behind by a killed sweep locks nothing.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import SweepLockedError, UnsafeOutputError

__all__ = [
    "LOCK_FILE",
    "ensure_output_dir",
    "lock_output_dir",
    "open_regular_file",
    "write_bytes_atomic",
    "write_text_atomic",
]

logger = logging.getLogger(__name__)

#: Lock file in the output directory; kept after the run (removing it could race a waiter).
LOCK_FILE = ".sweep.lock"

# O_NOFOLLOW is POSIX; where it is missing the lstat checks below still refuse links.
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def _refusal(path: Path, what: str) -> UnsafeOutputError:
    return UnsafeOutputError(
        f"{path} {what}; the sweep writes only plain files in a plain directory, so that a "
        "link planted there cannot redirect its writes. Remove it (the sweep recreates its "
        "own files) or choose another output_dir"
    )


def ensure_output_dir(path: Path) -> Path:
    """Create ``path`` (and its parents) if needed; refuse a link or a non-directory."""
    if path.is_symlink():
        raise _refusal(path, f"is a symbolic link (to {os.readlink(path)!r})")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:  # a file of that name
        raise _refusal(path, "is not a directory") from None
    if path.is_symlink() or not path.is_dir():  # lost a race to whoever planted it
        raise _refusal(path, "is not a directory")
    return path


def _check_existing(path: Path) -> None:
    """Refuse ``path`` if it exists as anything but a plain file (a link, a FIFO, a folder)."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return
    if stat.S_ISLNK(info.st_mode):
        raise _refusal(path, f"is a symbolic link (to {os.readlink(path)!r})")
    if not stat.S_ISREG(info.st_mode):
        raise _refusal(path, "is not a plain file")


def open_regular_file(path: Path, flags: int) -> int:
    """``os.open`` that never follows a link: a file descriptor of a plain file.

    A file opened for writing in place must have no other hard link, for the same reason.
    """
    _check_existing(path)
    try:
        fd = os.open(path, flags | _NOFOLLOW | _CLOEXEC, 0o666)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EMLINK):  # EMLINK: O_NOFOLLOW on the BSDs
            raise _refusal(path, "is a symbolic link") from exc
        raise
    info = os.fstat(fd)
    writing = flags & (os.O_WRONLY | os.O_RDWR)
    if not stat.S_ISREG(info.st_mode) or (writing and info.st_nlink > 1):
        os.close(fd)
        what = "is not a plain file" if not stat.S_ISREG(info.st_mode) else "has other hard links"
        raise _refusal(path, what)
    return fd


def write_bytes_atomic(path: Path, data: bytes) -> Path:
    """Write ``data`` to a new temporary file beside ``path``, flush it and rename it over
    ``path``: readers see the old file or the new one, and a link at ``path`` is refused."""
    _check_existing(path)
    while True:
        temp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            # O_EXCL: a name that exists, a dangling link included, is never opened.
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, 0o666)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
        raise
    return path


def write_text_atomic(path: Path, text: str) -> Path:
    """:func:`write_bytes_atomic` of UTF-8 text."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def _holder(fd: int) -> str:
    """Who holds the lock, as its holder wrote it (``"process 1234"``), for the message."""
    with contextlib.suppress(OSError, UnicodeDecodeError):
        text = os.pread(fd, 64, 0).decode("ascii").strip()
        if text.isdigit():
            return f" (process {text})"
    return ""


@contextlib.contextmanager
def lock_output_dir(
    directory: Path, *, wait: bool = False, on_wait: Callable[[], None] | None = None
) -> Iterator[Path]:
    """Hold an exclusive lock on ``directory`` for the duration of the ``with`` block.

    When another sweep holds it: ``wait=False`` raises :class:`SweepLockedError` at once,
    naming the directory; ``wait=True`` logs that it waits, calls ``on_wait`` and blocks until
    the other sweep ends.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX (Windows): no flock to take
        logger.warning("no file locking on this platform: %s is not locked", directory)
        yield directory / LOCK_FILE
        return
    path = directory / LOCK_FILE
    fd = open_regular_file(path, os.O_RDWR | os.O_CREAT)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                raise SweepLockedError(
                    f"another sweep is running in {directory}{_holder(fd)}: it holds {path}. "
                    "Run again when it has finished, or give this sweep another output_dir"
                ) from None
            logger.info("waiting for the sweep that holds %s%s", path, _holder(fd))
            if on_wait is not None:
                on_wait()
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        yield path
    finally:
        os.close(fd)  # closing the only descriptor releases the lock
