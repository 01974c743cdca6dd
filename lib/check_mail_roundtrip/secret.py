"""Signing secret: read it, or create it once (mode 0600) on first use.

A secret file that its group or others may read, or that belongs to another
user, is refused: whoever can read it can forge probes (and make a reflector
send mail).  It is read as :mod:`private_file` reads secrets, links not followed.

Creation is race-free: the secret is written to a temp file and linked into
place, so two first runs at the same moment end up with the same secret.
"""

from __future__ import annotations

import os
import secrets

from . import private_file
from .owners import StateError, access_problem, adopt
from .redact import register

MIN_BYTES = 16
MAX_BYTES = 4096


def load_or_create(path: str) -> bytes:
    """The secret's bytes; created with 32 random bytes if *path* is missing."""
    try:
        return read(path)
    except FileNotFoundError:
        pass
    directory = os.path.dirname(path) or "."
    if not os.path.isdir(directory):
        raise StateError("directory of secret file %s does not exist" % path)
    tmp = "%s.tmp-%d-%s" % (path, os.getpid(), secrets.token_hex(4))
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        adopt(fd, directory)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # fails if another run created it meanwhile
        except FileExistsError:
            pass
    except OSError as exc:
        raise StateError("cannot create secret file %s: %s" % (path, exc.strerror or exc))
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass
    return read(path)


def read(path: str) -> bytes:
    """The secret's bytes; FileNotFoundError when there is none (the caller may create it)."""
    try:
        value = private_file.read(path, "secret file", MAX_BYTES, follow=False,
                                  why="anyone who can read it can forge probes; ",
                                  on_denied=lambda p, exc: "secret file " + access_problem(p, exc)).strip()
    except FileNotFoundError:  # the caller creates it
        raise
    except OSError as exc:
        raise StateError("cannot read secret file %s: %s" % (path, exc.strerror or exc))
    if len(value) < MIN_BYTES:
        raise StateError("secret file %s holds fewer than %d bytes" % (path, MIN_BYTES))
    register(value)  # a secret of the run: never in any output
    return value
