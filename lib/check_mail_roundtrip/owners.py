"""Whose the check's files are, whom it trusts, and the words for both.

The check trusts files of the user it runs as and root's (a run as root
trusts any owner and gives the files it creates to the state directory's
owner).  A file or directory it may not use, one another user may have put
there, or a state directory others may write to is a :class:`StateError`:
the run is UNKNOWN with a text that names the owner and the fix.
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
import stat
from typing import Optional


class StateError(Exception):
    """The state cannot be used at all (no directory, cannot write)."""


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def runner() -> str:
    """The name of the user this check runs as."""
    return _user(os.geteuid())


def whose(path: str) -> str:
    """'belongs to USER (mode 0600)', or 'is not accessible' when even that cannot be seen."""
    try:
        st = os.lstat(path)
    except OSError:
        return "is not accessible"
    return "belongs to %s (mode %04o)" % (_user(st.st_uid), stat.S_IMODE(st.st_mode))


def access_problem(path: str, exc: OSError, directory: Optional[str] = None) -> str:
    """The UNKNOWN text for a file or directory this user may not use: owner and fix."""
    directory = directory or os.path.dirname(path) or "."
    me = runner()
    return ("%s %s: %s; this check runs as %s: give it the state directory, "
            "e.g. chown -R %s: %s" % (path, whose(path), exc.strerror or exc, me, me, directory))


def trusted_owner(uid: int) -> bool:
    """May this run trust a file that *uid* owns?  Its own and root's; a run as root any."""
    me = os.geteuid()
    return me == 0 or uid in (me, 0)


def foreign(path: str, st: os.stat_result, what: str) -> Optional[str]:
    """The UNKNOWN text when *path* (whose stat is *st*) belongs to a user this run
    must not trust (see :func:`trusted_owner`), else None."""
    if trusted_owner(st.st_uid):
        return None
    me = runner()
    return ("%s %s belongs to %s (mode %04o), not to %s who runs this check: another user may have put "
            "it there; remove it, or if it is right, chown %s: %s"
            % (what, path, _user(st.st_uid), stat.S_IMODE(st.st_mode), me, me, path))


def _private_group(gid: int, uid: int) -> bool:
    """Is *gid* the private group of user *uid*: its primary group, and no other user's?"""
    try:
        owner, group = pwd.getpwuid(uid), grp.getgrgid(gid)
    except KeyError:
        return False
    if owner.pw_gid != gid or any(member != owner.pw_name for member in group.gr_mem):
        return False
    return not any(other.pw_gid == gid and other.pw_uid != uid for other in pwd.getpwall())


def open_to_others(directory: str) -> Optional[str]:
    """The UNKNOWN text when users other than its owner may create files in *directory*, else None.

    Anyone may when others have write permission (the sticky bit does not
    help: the names the check uses can be taken before it creates them); the
    group may, unless it is the owner's private group (:func:`_private_group`).
    """
    st = os.stat(directory)
    mode = stat.S_IMODE(st.st_mode)
    if mode & stat.S_IWOTH:
        who = "anyone"
    elif mode & stat.S_IWGRP and not _private_group(st.st_gid, st.st_uid):
        try:
            who = "its group %s" % grp.getgrgid(st.st_gid).gr_name
        except KeyError:
            who = "its group %d" % st.st_gid
    else:
        return None
    return ("state directory %s can be written by %s (mode %04o): another user could put a secret, state "
            "or lock file there and make the check report what they like; make it the owner's alone: "
            "chmod 700 %s" % (directory, who, mode, directory))


def _denied(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.EACCES, errno.EPERM)


def adopt(fd: int, directory: str) -> None:
    """Run as root in another user's directory: give the new file to that user."""
    if os.geteuid() != 0:
        return
    try:
        st = os.stat(directory)
        if st.st_uid != 0:
            os.fchown(fd, st.st_uid, st.st_gid)
    except OSError:
        pass
