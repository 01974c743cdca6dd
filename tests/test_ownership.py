"""Who owns the state: a run as root never leaves files the monitoring user
cannot use, and a file or directory the run may not use is UNKNOWN with the
owner and the fix, never "damage" moved aside.  A state, secret or token cache
file of another user (not root) is not trusted: UNKNOWN; a password file the
run may not read is UNKNOWN with whose it is and the fix.

The monitoring user is played by uid/gid 65534 (nobody): the run as that user
is the real cli.main() in a child that imports everything as root, then
drops its privileges (the test's Python may live where nobody cannot read).
"""

import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
import time

import pytest

from check_mail_roundtrip.oauth2 import GrantToken
from check_mail_roundtrip.state import file_stem
from tests.checkrun import ROOT, Checker, Result
from tests.faultservers import free_port

NOBODY = 65534
_AS_NOBODY = r"""
import os, sys
sys.path.insert(0, os.path.join(sys.argv[1], "lib"))
from check_mail_roundtrip import cli, check, roundtrip, imap, smtp, state, secret, extraopts  # as root
import nagiosplugin, imapclient, smtplib, ssl, email.policy, encodings.idna  # noqa: F401
os.setgroups([]); os.setgid(65534); os.setuid(65534)
cli.main(sys.argv[2:])
"""


def _as_nobody(check, *extra):
    p = subprocess.run([sys.executable, "-c", _AS_NOBODY, ROOT, *check.args, *extra],
                       capture_output=True, text=True, env=check.env, timeout=60,
                       stdin=subprocess.DEVNULL)
    return Result(p.returncode, p.stdout, p.stderr, 0.0)


@pytest.fixture
def reachable():
    """A directory nobody can reach (pytest's tmp_path is root's, 0700); removed afterwards."""
    base = tempfile.mkdtemp(prefix="cmr-owner-")
    os.chmod(base, 0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def _checker(lab, tmp_path, base, name):
    """A Checker whose state directory lies in *base*."""
    check = Checker(lab, tmp_path, "monitor@lab.test", None, "imaps", "smtp", "--name", name)
    check.state_dir = os.path.join(base, "state")
    check.args[check.args.index("--state-dir") + 1] = check.state_dir
    return check


def _nobody_dir(path):
    os.makedirs(path, mode=0o700)
    os.chown(path, NOBODY, NOBODY)
    return path


def _owners(directory):
    return {name: (os.lstat(os.path.join(directory, name)).st_uid,
                   stat.S_IMODE(os.lstat(os.path.join(directory, name)).st_mode))
            for name in os.listdir(directory)}


def test_a_run_as_root_in_the_monitoring_users_directory_leaves_files_that_user_owns(lab, tmp_path, reachable):
    check = _checker(lab, tmp_path, reachable, "owned")
    _nobody_dir(check.state_dir)
    r = check()
    assert r.rc == 0 and "first probe sent" in r.line, r
    stem = file_stem("owned")
    assert _owners(check.state_dir) == {
        stem + ".json": (NOBODY, 0o600), stem + ".lock": (NOBODY, 0o600), "secret": (NOBODY, 0o600)}
    lab.wait_for("monitor@lab.test", 1)
    r = _as_nobody(check)  # the monitoring user goes on where root left off
    assert r.rc == 0 and r.line.startswith("MAIL_ROUNDTRIP OK - round trip "), r


def test_a_root_owned_state_directory_is_unknown_with_the_fix(lab, tmp_path, reachable):
    check = _checker(lab, tmp_path, reachable, "rootdir")
    r = check()  # as root: creates the directory 0700, root's
    assert r.rc == 0, r
    before = _owners(check.state_dir)
    r = _as_nobody(check)
    assert (r.rc, r.line) == (3, "MAIL_ROUNDTRIP UNKNOWN - state directory %s belongs to root (mode 0700): "
                                 "Permission denied; this check runs as nobody: give it the state "
                                 "directory, e.g. chown -R nobody: %s" % (check.state_dir, check.state_dir)), r
    assert _owners(check.state_dir) == before


def test_root_owned_files_in_the_users_directory_are_unknown_and_nothing_is_moved_aside(lab, tmp_path, reachable):
    """Files left by an older version run as root: not damage, UNKNOWN with the owner and the fix."""
    check = _checker(lab, tmp_path, reachable, "rootfiles")
    _nobody_dir(check.state_dir)
    assert check().rc == 0
    for name in os.listdir(check.state_dir):
        os.chown(os.path.join(check.state_dir, name), 0, 0)
    before = _owners(check.state_dir)
    r = _as_nobody(check)
    lock = os.path.join(check.state_dir, file_stem("rootfiles") + ".lock")
    assert (r.rc, r.line) == (3, "MAIL_ROUNDTRIP UNKNOWN - lock file %s belongs to root (mode 0600): "
                                 "Permission denied; this check runs as nobody: give it the state "
                                 "directory, e.g. chown -R nobody: %s" % (lock, check.state_dir)), r
    assert _owners(check.state_dir) == before  # nothing moved aside, nothing new
    assert pwd.getpwuid(NOBODY).pw_name == "nobody"


DAEMON = 1  # another local user: neither the one running the check nor root


def _planted(kind, check, extra):
    """The path of a *kind* file in the state directory, ready for another user to take over."""
    if kind == "token cache":
        url = "https://127.0.0.1:%d/token" % free_port()  # nobody answers: only a cached token would do
        client_secret = os.path.join(os.path.dirname(check.state_dir), "client.secret")
        with open(os.open(client_secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
            f.write("s3cret-client\n")
        os.chown(client_secret, NOBODY, NOBODY)
        extra += ["--imap-auth", "oauth2", "--oauth2-token-url", url, "--oauth2-client-id", "app",
                  "--oauth2-client-secret-file", client_secret, "-t", "6"]
        path = GrantToken(url, "app", "s3cret-client", cache_dir=check.state_dir).cache
        with open(path, "w") as f:
            json.dump({"access_token": "planted-token", "issued_at": time.time(),
                       "expires_at": time.time() + 3600}, f)
        return path
    assert check().rc == 0  # as root: the state, the lock and the secret, all the monitoring user's
    return os.path.join(check.state_dir, {"state file": file_stem("planted") + ".json", "secret file": "secret"}[kind])


@pytest.mark.parametrize("kind", ["state file", "secret file", "token cache"])
def test_a_file_of_another_user_in_the_state_directory_is_unknown(lab, tmp_path, reachable, kind):
    """Used as it was, a state file or a token another user put there made the check report what they liked."""
    check = _checker(lab, tmp_path, reachable, "planted")
    _nobody_dir(check.state_dir)
    extra = []
    path = _planted(kind, check, extra)
    os.chown(path, DAEMON, DAEMON)
    os.chmod(path, 0o644)
    r = _as_nobody(check, *extra)
    owner = pwd.getpwuid(DAEMON).pw_name
    assert (r.rc, r.line) == (3, "MAIL_ROUNDTRIP UNKNOWN - %s %s belongs to %s (mode 0644), not to nobody who "
                                 "runs this check: another user may have put it there; remove it, or if it is "
                                 "right, chown nobody: %s" % (kind, path, owner, path)), r
    assert "planted-token" not in r.stdout + r.stderr


def test_a_password_file_the_check_may_not_read_names_whose_it_is_and_the_fix(lab, tmp_path, reachable):
    """The layout of README's install (directory root:nagios 0750, file nagios 0600) works; each step
    short of it is UNKNOWN with the fix, not a usage error."""
    check = _checker(lab, tmp_path, reachable, "pwfile")
    _nobody_dir(check.state_dir)
    check.env["CHECK_MAIL_ROUNDTRIP_IMAP_PASSWORD"] = "not the password"  # the file must be read
    etc = os.path.join(reachable, "etc")
    os.mkdir(etc, 0o700)
    pwfile = os.path.join(etc, "imap.password")
    with open(os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
        f.write(lab.users["monitor@lab.test"] + "\n")
    r = _as_nobody(check, "--imap-password-file", pwfile)
    assert (r.rc, r.line) == (3, "MAIL_ROUNDTRIP UNKNOWN - IMAP password file %s cannot be reached: Permission "
                                 "denied; this check runs as nobody and may not enter %s: e.g. chgrp nogroup %s "
                                 "&& chmod g+x %s" % (pwfile, etc, etc, etc)), r
    os.chown(etc, 0, NOBODY)
    os.chmod(etc, 0o750)
    r = _as_nobody(check, "--imap-password-file", pwfile)
    assert (r.rc, r.line) == (3, "MAIL_ROUNDTRIP UNKNOWN - IMAP password file %s belongs to root (mode 0600): "
                                 "Permission denied; this check runs as nobody: give it the file, e.g. "
                                 "chown nobody: %s" % (pwfile, pwfile)), r
    os.chown(pwfile, NOBODY, NOBODY)
    r = _as_nobody(check, "--imap-password-file", pwfile)
    assert r.rc == 0 and r.line.startswith("MAIL_ROUNDTRIP OK - first probe sent, 1 in flight |"), r
