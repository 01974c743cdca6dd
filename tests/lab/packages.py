"""Debian packages for the test lab: install what is missing, start nothing.

``ensure(packages)`` installs the missing ones with apt (as root).  A
temporary ``/usr/sbin/policy-rc.d`` that exits 101 keeps the packages'
maintainer scripts from starting system daemons (Postfix, Dovecot, Icinga 2,
Nagios, carbon-cache); the lab starts private instances itself.  Concurrent
callers are serialised by a lock file, so two test modules installing at
once do not trip over apt's own lock or each other's policy-rc.d.
"""

import fcntl
import os
import shutil
import subprocess
import sys

POLICY = "/usr/sbin/policy-rc.d"
LOCK = "/run/check_mail_roundtrip-lab-apt.lock"


class PackageError(RuntimeError):
    """Packages are missing and cannot be installed here."""


def missing(packages):
    """The packages of *packages* that dpkg does not report as installed."""
    if not shutil.which("dpkg-query"):
        return list(packages)
    out = []
    for pkg in packages:
        res = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg],
                             capture_output=True, text=True)
        if res.returncode != 0 or "install ok installed" not in res.stdout:
            out.append(pkg)
    return out


def ensure(packages, debconf="", verbose=True):
    """Install the missing *packages*; *debconf* preseeds questions first."""
    todo = missing(packages)
    if not todo:
        return []
    if os.geteuid() != 0:
        raise PackageError("missing packages %s; run as root" % " ".join(todo))
    os.makedirs(os.path.dirname(LOCK), exist_ok=True)
    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        todo = missing(packages)  # another caller may have installed them meanwhile
        if not todo:
            return []
        if verbose:
            print("lab install: installing " + " ".join(todo), file=sys.stderr)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        if debconf:
            subprocess.run(["debconf-set-selections"], check=True, text=True, input=debconf)
        had_policy = os.path.exists(POLICY)
        try:
            if not had_policy:
                with open(POLICY, "w") as fh:
                    fh.write("#!/bin/sh\nexit 101\n")
                os.chmod(POLICY, 0o755)
            quiet = {} if verbose else {"stdout": subprocess.DEVNULL}
            subprocess.run(["apt-get", "update"], check=True, env=env, **quiet)
            subprocess.run(["apt-get", "install", "-y", "--no-install-recommends",
                            "-o", "DPkg::Lock::Timeout=600", *todo],
                           check=True, env=env, **quiet)
        finally:
            if not had_policy and os.path.exists(POLICY):
                os.unlink(POLICY)
    return todo
