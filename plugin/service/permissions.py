"""File modes for everything the node writes: received instances carry PHI.

Default: files 0600, directories 0700 (owner only). With ``[storage] group = "NAME"`` files are
0640 and directories 0750 and belong to that group: the state directory gets the group and the
set-group-ID bit, so every file and directory created below it inherits the group (Linux/BSD
directory semantics), whoever writes it (the node, its forked workers, SQLite, the result writers).

The mechanism is the process umask (077 or 027), set once by the node before it creates
anything, because files are written by libraries that take no mode (SQLite, highdicom, logging
handlers); the node's own writes also pass explicit modes (:data:`FILE_MODE`). What existed before
is tightened at start-up: the state directory itself and its top-level entries (a 0700 state
directory alone already closes everything below it to other users).
"""
from __future__ import annotations

import grp
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class Modes:
    file: int
    dir: int
    umask: int
    gid: int | None

    @classmethod
    def for_group(cls, group: str | None) -> "Modes":
        if group is None:
            return cls(0o600, 0o700, 0o077, None)
        return cls(0o640, 0o750, 0o027, grp.getgrnam(group).gr_gid)


FILE_MODE = 0o666  # what the node's os.open calls ask for: the umask takes it to 0600 / 0640


def apply(state_dir: Path, group: str | None) -> Modes:
    """Set the process umask for ``group`` and tighten ``state_dir`` (created if missing)."""
    modes = Modes.for_group(group)
    os.umask(modes.umask)
    root = Path(state_dir)
    root.mkdir(parents=True, exist_ok=True)
    for entry in [root, *root.iterdir()]:
        if entry.is_symlink():
            continue
        try:
            secure(entry, modes, setgid=modes.gid is not None)
        except PermissionError as exc:  # e.g. a worker on a shared state_dir another user owns
            LOG.warning("cannot set the mode of %s: %s", entry, exc)
    return modes


def secure(path: Path, modes: Modes, *, setgid: bool = False) -> None:
    """Give one file or directory its mode (and group)."""
    st = path.lstat()
    if modes.gid is not None and st.st_gid != modes.gid:
        os.chown(path, -1, modes.gid)
    if stat.S_ISDIR(st.st_mode):
        os.chmod(path, modes.dir | (stat.S_ISGID if setgid else 0))
    else:
        os.chmod(path, modes.file)


def check_group(group: str) -> str:
    """The group name if it exists (config validation)."""
    try:
        grp.getgrnam(group)
    except KeyError:
        raise ValueError(f"no such group {group!r} on this machine") from None
    return group
