"""Files and folders that hold the cluster's secrets, and which of them to trust.

Anything holding the token or the control store is mode 0600 in a folder of mode 0700 that this
user owns. Files other processes left (session folders, ``head.json``, node files) are only
trusted when this user owns them and no other user may write them: a folder planted by another
local user must not make a driver join that user's head, nor ``freight stop`` signal its pids.
"""

from __future__ import annotations

import os
import stat

__all__ = ["UntrustedPath", "check_owned", "make_private_dir", "write_private_file"]


class UntrustedPath(PermissionError):
    """A file or folder that another user owns or may write, so freight does not use it."""


def check_owned(path: str, what: str, private: bool = False) -> os.stat_result:
    """Stat ``path`` (not following a final symlink) and raise :class:`UntrustedPath` unless
    this user owns it and no other user may write it (with ``private``: nor read it either).

    ``what`` names the path in the message (``"the session root"``)."""
    st = os.lstat(path)
    if st.st_uid != os.geteuid():
        owner = _user(st.st_uid)
        raise UntrustedPath(
            f"freight: {what} {path} belongs to {owner}, not to you: freight does not use "
            "files another user could have planted. Remove it, or set FREIGHT_TEMP_DIR to a "
            "folder of your own."
        )
    mode = stat.S_IMODE(st.st_mode)
    loose = mode & (0o077 if private else 0o022)
    if loose and not stat.S_ISLNK(st.st_mode):
        want = "0700" if stat.S_ISDIR(st.st_mode) else "0600"
        # A shared folder such as /tmp is meant to stay open: never advise closing it.
        fix = (
            "use a folder of your own below it instead"
            if mode & stat.S_ISVTX
            else f"run `chmod {want} {path}` (or use a folder of your own)"
        )
        raise UntrustedPath(
            f"freight: {what} {path} has mode {mode:04o}: other users may "
            f"{'read or write' if private else 'write'} it. To keep the cluster's secrets "
            f"from them, {fix}."
        )
    return st


def make_private_dir(path: str, what: str, tighten: bool = False) -> None:
    """Create the folder ``path`` with mode 0700 (and any missing parents), or check that the
    existing one is this user's and closed to others (:class:`UntrustedPath` if not). With
    ``tighten``, an existing folder of this user's is closed (chmod 0700) instead: for folders
    that are freight's own, such as a session folder."""
    try:
        os.makedirs(path, mode=0o700)
    except FileExistsError:
        pass
    real = os.path.realpath(path)
    if tighten and os.stat(real).st_uid == os.geteuid():
        os.chmod(real, 0o700)
    check_owned(real, what, private=True)


def write_private_file(path: str, text: str) -> None:
    """Write ``text`` to ``path`` atomically (a temporary file, then a rename), mode 0600."""
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _user(uid: int) -> str:
    try:
        import pwd

        return f"user {pwd.getpwuid(uid).pw_name!r} (uid {uid})"
    except (ImportError, KeyError):
        return f"uid {uid}"
