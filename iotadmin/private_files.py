"""Files and directories only this user can read, from the moment they exist.

Keys, session databases and logs that quote ids are created 0600 in directories of 0700:
never world-readable for a moment between a write and a chmod, whatever the umask.
"""

import os
from pathlib import Path


def private_dir(path: Path) -> Path:
    """``path`` made 0700, or tightened to it if it exists."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def private_file(path: Path, flags: int = os.O_WRONLY | os.O_CREAT) -> int:
    """An fd on ``path``, created 0600 (an existing file is tightened too)."""
    fd = os.open(path, flags, 0o600)
    os.fchmod(fd, 0o600)
    return fd
