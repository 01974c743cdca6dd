"""Install the plugin on this machine exactly as README's install section says.

README.md's section "## Install on a monitoring server" holds two shell
blocks (4-space indented): the install commands and the "first run" command.
``install(password)`` runs the first block as written, with bash and
``set -e``, as root, from the repository root, with the PATH that
``sudo`` gives on Debian (so ``python3`` is /usr/bin/python3) and *password*
as the line its ``read`` prompt takes.  Before that it makes sure only of
what README says must already be there: the user ``nagios`` (from
Debian's nagios4 packages).  ``first_run_argv()`` is the second block as an
argv list.

The session fixture ``installed_plugin`` (imported by tests/conftest.py)
installs once per pytest session and returns the plugin's path.  The
installation is the machine's, shared by every pytest session on it:
``password_in_file(pw)`` puts a lab password in the installed password file
and, like ``install``, holds ``exclusive()`` (a lock file) meanwhile, so no
other session reinstalls or rewrites it under a running check.
``new_state_files_removed()`` removes the state files a test adds to the
real state directory.
"""

import contextlib
import fcntl
import os
import pwd
import re
import shlex
import subprocess
import time

import pytest

from . import packages

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
README = os.path.join(ROOT, "README.md")
SECTION = "Install on a monitoring server"
PLUGIN = "/usr/lib/nagios/plugins/check_mail_roundtrip"
PASSWORD_FILE = "/etc/check_mail_roundtrip/imap.password"
STATE_DIR = "/var/lib/check_mail_roundtrip"
MONITOR_USER = "nagios"
TEST_PASSWORD = "install-test pass\\word 'with' \"quotes\" and spaces"
# Debian's sudo secure_path, and the environment sudo leaves a root shell.
SECURE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
ROOT_ENV = {"PATH": SECURE_PATH, "HOME": "/root", "USER": "root", "LOGNAME": "root",
            "SHELL": "/bin/bash", "LANG": "C.UTF-8"}
# The installation is this machine's: one pytest session at a time installs it
# or uses it with a password of its own (see exclusive()).
LOCK = "/run/check_mail_roundtrip-plugin.lock"
LOCK_TIMEOUT = 900
INSTALL_TIMEOUT = 900


class InstallError(RuntimeError):
    """README's install commands did not work as written; the message says why."""


def readme_section(title=SECTION, path=README):
    """The text of the "## *title*" section of README.md (up to the next "## ")."""
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    m = re.search(r"^## %s\n(.*?)(?=^## |\Z)" % re.escape(title), text, re.M | re.S)
    if not m:
        raise InstallError("README.md has no section '## %s'" % title)
    return m.group(1)


def code_blocks(section):
    """The 4-space indented code blocks of *section*, dedented, in order."""
    blocks, current, prev_blank = [], None, True
    for line in section.split("\n"):
        if current is not None and (line.startswith("    ") or not line.strip()):
            current.append(line[4:])
        elif line.startswith("    ") and prev_blank:
            current = [line[4:]]
            blocks.append(current)
        else:
            current = None
        prev_blank = not line.strip()
    return ["\n".join(b).strip("\n") + "\n" for b in blocks]


def install_script():
    """README's install commands: the first code block of the section."""
    blocks = code_blocks(readme_section())
    if not blocks:
        raise InstallError("README's section '%s' has no code block" % SECTION)
    return blocks[0]


def first_run_argv():
    """README's "first run" command (the section's second block) as an argv list."""
    blocks = code_blocks(readme_section())
    if len(blocks) < 2:
        raise InstallError("README's section '%s' has no second code block" % SECTION)
    lines = [ln for ln in blocks[1].split("\n") if not ln.lstrip().startswith("#")]
    return shlex.split("\n".join(lines).replace("\\\n", " "))


def ensure_monitor_user():
    """The user README expects (created by Debian's nagios4/icinga2 packages)."""
    try:
        return pwd.getpwnam(MONITOR_USER)
    except KeyError:
        pass
    packages.ensure(["nagios4-core"], verbose=False)
    return pwd.getpwnam(MONITOR_USER)


def run_install(password=TEST_PASSWORD, script=None, timeout=INSTALL_TIMEOUT):
    """Run README's install block as root with bash -e; *password* answers `read`."""
    script = script if script is not None else install_script()
    try:
        res = subprocess.run(["bash", "-e", "-c", script], cwd=ROOT, env=dict(ROOT_ENV),
                             input=password + "\n", capture_output=True, text=True,
                             timeout=timeout, umask=0o022)
    except subprocess.TimeoutExpired as exc:
        raise InstallError("README's install commands took longer than %ss" % timeout) from exc
    if res.returncode != 0:
        raise InstallError("README's install commands failed (exit %s):\n%s\n--- output ---\n%s%s"
                           % (res.returncode, script, res.stdout[-3000:], res.stderr[-3000:]))
    return res


@contextlib.contextmanager
def _flock(path, timeout):
    """An exclusive flock on *path* for a while, waiting at most *timeout* s."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a") as fh:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise InstallError("%s still locked after %ss" % (path, timeout)) from None
                time.sleep(0.2)
        yield


_held = 0  # how deep this process is inside exclusive()


@contextlib.contextmanager
def exclusive(timeout=LOCK_TIMEOUT):
    """The installation for this process alone meanwhile: no other session reinstalls
    it or rewrites its password file.  Re-entrant within the process."""
    global _held
    if _held:
        _held += 1
        try:
            yield
        finally:
            _held -= 1
        return
    with _flock(LOCK, timeout):
        _held = 1
        try:
            yield
        finally:
            _held = 0


def install(password=TEST_PASSWORD):
    """Make the user nagios exist, then install as README says; the plugin's path."""
    if os.geteuid() != 0:
        raise InstallError("installing the plugin as README says needs root")
    ensure_monitor_user()
    # apt-get inside the block: wait for the lab's own package installs too
    with exclusive(), _flock(packages.LOCK, LOCK_TIMEOUT):
        run_install(password)
    if not os.access(PLUGIN, os.X_OK):
        raise InstallError("README's install commands ran but %s is not executable" % PLUGIN)
    return PLUGIN


def _replace_content(path, text):
    """Overwrite *path* in place, so its owner and mode stay as installed."""
    with open(path, "r+") as fh:
        fh.truncate(0)
        fh.write(text)


@contextlib.contextmanager
def password_in_file(password, path=PASSWORD_FILE):
    """*password* in the installed password file for a while; the old content after.

    Holds exclusive() meanwhile, so another session's install cannot overwrite it.
    """
    with exclusive():
        with open(path) as fh:
            old = fh.read()
        _replace_content(path, password + "\n")
        try:
            yield path
        finally:
            _replace_content(path, old)


@contextlib.contextmanager
def new_state_files_removed(directory=STATE_DIR):
    """Remove afterwards the state files that appear in *directory* meanwhile.

    The signing secret stays: once created it is the installation's.
    """
    before = set(os.listdir(directory))
    try:
        yield directory
    finally:
        for name in sorted(set(os.listdir(directory)) - before - {"secret"}):
            os.unlink(os.path.join(directory, name))


@pytest.fixture(scope="session")
def installed_plugin():
    """The plugin installed as README says, for the whole session: its path."""
    try:
        return install()
    except (InstallError, packages.PackageError) as exc:
        pytest.fail("plugin install failed: %s" % exc, pytrace=False)
