"""Read a small file that holds a secret (a password, a client secret, a token,
the signing secret) or options (``--extra-opts``), without trusting what is there.

- Only a regular file is read.  It is opened non-blocking and checked on the
  open descriptor, so a FIFO, a device (``/dev/zero``), a socket or a
  directory is refused at once, never waited on or read.
- At most *limit* bytes: a larger file is refused, never read to the end.
- A symlink the admin named is followed (configuration tools manage secrets
  under /etc that way), but what it leads to must be a regular file too; with
  ``follow=False`` (files the check keeps itself) a symlink is not opened.
- ``private=True``: the file must belong to the user running the check or
  root (:func:`owners.trusted_owner`), and neither its group nor others may
  read or write it: otherwise :class:`Refused`, naming the mode and the fix
  ``chmod 600 FILE``.  ``owned=True`` asks only the first (the check's own
  state files and token cache, whose mode is the check's business).
- A file this user may not open is :class:`Refused` with whose it is and the
  fix (``chown USER: FILE``), or which directory shuts it out.

Refused is a StateError: the run is UNKNOWN.  A file that is not there, not a
regular file or too large is an OSError (:class:`Unfit` for the last two) with
words for the caller's own message.
"""

from __future__ import annotations

import errno
import grp
import os
import stat
from typing import Callable, Optional

from .owners import StateError, foreign, runner, whose

_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"))


class Refused(StateError):
    """The file must not be used as it is (owner, mode) or may not be read by this user."""


class Unfit(OSError):
    """Not a regular file, or larger than the limit; ``strerror`` says which."""


def denied(path: str, what: str, exc: OSError) -> str:
    """The text for a file this user may not open: whose it is and the fix."""
    me = runner()
    if os.path.lexists(path):
        return ("%s %s %s: %s; this check runs as %s: give it the file, e.g. chown %s: %s"
                % (what, path, whose(path), exc.strerror or exc, me, me, path))
    closed = _closed_directory(path)
    try:
        group = grp.getgrgid(os.getegid()).gr_name
    except KeyError:
        group = str(os.getegid())
    return ("%s %s cannot be reached: %s; this check runs as %s and may not enter %s: e.g. chgrp %s %s "
            "&& chmod g+x %s" % (what, path, exc.strerror or exc, me, closed, group, closed, closed))


def _closed_directory(path: str) -> str:
    """The first directory on the way to *path* this user may not enter."""
    parent = os.path.dirname(os.path.abspath(path))
    ancestors = []
    for _ in range(256):
        ancestors.append(parent)
        up = os.path.dirname(parent)
        if up == parent:
            break
        parent = up
    for directory in reversed(ancestors):
        if not os.access(directory, os.X_OK):
            return directory
    return os.path.dirname(os.path.abspath(path))


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def _open_to_others(mode: int) -> str:
    """'can be read by its group' and the like, for the bits *mode* gives away."""
    who = "others" if mode & 0o007 else "its group"
    return "can be %s by %s" % ("read" if mode & 0o044 else "written", who)


def read(path: str, what: str, limit: int, private: bool = True, follow: bool = True, why: str = "",
         on_denied: Optional[Callable[[str, OSError], str]] = None) -> bytes:
    """The bytes of the file *path* (at most *limit*), as the module doc says.

    *what* names the file in messages ("IMAP password file"); *why* is put
    before the chmod fix of a file others may read; *on_denied* gives the
    text for a file this user may not open (default: :func:`denied`).
    """
    return load(path, what, limit, private, follow, why, on_denied)[0]


def load(path: str, what: str, limit: int, private: bool = True, follow: bool = True, why: str = "",
         on_denied: Optional[Callable[[str, OSError], str]] = None,
         owned: bool = False) -> tuple[bytes, os.stat_result]:
    """:func:`read`, and the status of the very file read (its owner, its mode)."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags | (0 if follow else os.O_NOFOLLOW))
    except PermissionError as exc:
        raise Refused(on_denied(path, exc) if on_denied else denied(path, what, exc)) from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
        if not stat.S_ISREG(st.st_mode):
            raise Unfit(errno.EINVAL, "not a regular file (%s)" % _kind(st.st_mode))
        if private or owned:
            planted = foreign(path, st, what)
            if planted:
                raise Refused(planted)
        if private:
            mode = stat.S_IMODE(st.st_mode)
            if mode & 0o077:
                raise Refused("%s %s %s (mode %04o): %smake it the owner's alone: chmod 600 %s"
                              % (what, path, _open_to_others(mode), mode, why, path))
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(limit + 1)
        if len(data) > limit:
            raise Unfit(errno.EFBIG, "larger than %d bytes" % limit)
        return data, st
    finally:
        os.close(fd)


def first_line(data: bytes) -> bytes:
    """The first line of *data*, its line end (LF, CRLF or CR) left out."""
    line = data.split(b"\n", 1)[0]
    return line.split(b"\r", 1)[0]
