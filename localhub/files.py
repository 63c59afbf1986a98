"""The data directory's files: private from the moment they exist.

Keys, the owner connection string and the database are secrets, so they are created
0600 inside a 0700 directory (never written first and narrowed after), and a directory
left looser by an older localhub is tightened at start.
"""

import contextlib
import os
from pathlib import Path

DIR_MODE, FILE_MODE = 0o700, 0o600


def private_dir(path: Path) -> Path:
    """Create ``path`` 0700, or narrow it to 0700 if it exists (the parents keep the
    umask's mode: they may be shared, like ``var/``)."""
    path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    path.chmod(DIR_MODE)  # mkdir's mode is masked by the umask, and skipped if it exists
    return path


def open_private(path: Path, flags: int) -> int:
    """``os.open(path, flags)``, a file created 0600 or narrowed to it (the dashboard's
    lock files and logs are opened so too)."""
    fd = os.open(path, flags | os.O_NOFOLLOW, FILE_MODE)
    os.fchmod(fd, FILE_MODE)  # the mode is masked by the umask, and skipped if it exists
    return fd


def create_private(path: Path) -> None:
    """Make sure ``path`` exists and is 0600, without changing what it holds."""
    os.close(open_private(path, os.O_WRONLY | os.O_CREAT))


def write_private(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` in a new 0600 file, atomically: a reader or a crash
    sees the old file or the new one, never a half-written or world-readable one."""
    temporary = path.with_name(f".{path.name}.new")
    temporary.unlink(missing_ok=True)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)


def tighten(*paths: Path) -> None:
    """Narrow the files that exist among ``paths`` to 0600."""
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            if path.stat().st_mode & 0o777 != FILE_MODE:
                path.chmod(FILE_MODE)
