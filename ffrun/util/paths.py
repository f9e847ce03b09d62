"""Paths a user types (a setting's value, an environment variable, a command's --out), checked before use:
`~user` that names no user, a name longer than the file system takes, and an output folder that is empty
or cannot be written are each one line naming the setting and the fix, not a traceback from pathlib."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from ffrun.util.errors import FfrunError


def shown(text: str | os.PathLike, limit: int = 120) -> str:
    """`text` for a message: whole when short, else its start and end with its length (a 300-character name
    would push the line's fix off the screen)."""
    text = str(text)
    return text if len(text) <= limit else f"{text[:60]}...{text[-40:]} ({len(text)} characters)"


def expand_user(text: str | os.PathLike, where: str) -> Path:
    """`text` as a Path with a leading `~` or `~user` expanded; FfrunError when there is no such user (or
    no home directory), naming `where` (the setting, e.g. `$FFRUN_DATA=~bob/data`)."""
    try:
        return Path(text).expanduser()
    except RuntimeError:  # pathlib: "Could not determine home directory."
        head = str(text).split("/", 1)[0]
        raise FfrunError(f"{where}: cannot expand {head}: no such user, or no home directory; give the full "
                         "path instead") from None


def too_long(path: Path) -> str | None:
    """Why `path` is longer than the file system takes (one name over NAME_MAX bytes, or the whole over
    PATH_MAX), or None."""
    names = [p for p in str(path).split("/") if p]
    longest = max((len(os.fsencode(p)) for p in names), default=0)
    try:
        name_max = os.pathconf(_existing_parent(path), "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    if longest > name_max:
        return f"a name of {longest} bytes in it, where the file system takes at most {name_max}"
    if len(os.fsencode(str(path))) >= 4096:
        return f"{len(os.fsencode(str(path)))} bytes, where the file system takes at most 4095"
    return None


def _existing_parent(path: Path) -> Path:
    for parent in [path, *path.parents]:
        try:
            if parent.is_dir():
                return parent
        except OSError:
            continue
    return Path(".")


def user_path(text: str | os.PathLike, where: str) -> Path:
    """A file or folder named by a setting (`task.image=...`): `~` expanded, and FfrunError naming `where`
    when the name is too long for the file system or a folder on the way may not be read, the errors on
    which pathlib's `exists` and `is_file` raise instead of answering False."""
    where = shown(where)  # the setting as typed may be the over-long name itself
    path = expand_user(text, where)
    why = too_long(path)
    if why:
        raise FfrunError(f"{where}: the path is too long ({why}); give a shorter path")
    try:
        path.stat()
    except OSError as e:
        if e.errno == errno.ENAMETOOLONG:
            raise FfrunError(f"{where}: the path is too long for the file system; give a shorter path") from None
        if e.errno in (errno.EACCES, errno.EPERM):
            raise FfrunError(f"{where}: cannot look at {path}: permission denied; give a file you may read, "
                             "or change its permissions") from None
    return path


def output_folder(text: str | os.PathLike, flag: str = "--out") -> Path:
    """The folder a command writes into (`--out`), made if missing and checked writable before any work
    starts. FfrunError for an empty name (it would mean the current folder), a file in the way, a folder
    that may not be written (read-only, permissions), or a name too long."""
    if not str(text).strip():
        raise FfrunError(f"{flag} '': an empty folder name; give the folder to write into (e.g. {flag} results)")
    path = expand_user(text, f"{flag} {text}")
    why = too_long(path.resolve())
    if why:
        raise FfrunError(f"{flag} {text}: the path is too long ({why}); give a shorter path")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path, prefix=".ffrun-probe-"):
            pass  # the truest test of "can this folder be written": os.access says yes to root on a read-only mount
    except FileExistsError:
        raise FfrunError(f"{flag} {text}: a file is in the way (not a folder); give a folder") from None
    except OSError as e:
        reason = (e.strerror or str(e)).lower()
        raise FfrunError(f"{flag} {text}: cannot write there ({reason}); give {flag} a folder you can write "
                         "to") from None
    return path
