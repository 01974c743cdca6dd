"""Run a forking daemon from a private directory for a test, and stop it for sure.

    pid = start(["nagios4", "-d", cfg], pid_file, ready=lambda: os.path.exists(sock),
                env=clean_env(), log=log_file)
    ...
    stop(pid)

``start`` runs the command (which forks and returns), then waits, bounded,
until the pid file names a live process and ``ready()`` holds; on failure it
raises LabError with the tail of the daemon's log.  ``stop`` sends SIGTERM,
waits, then kills whatever is left in the daemon's session (a daemon that
called setsid() leads its own session: its workers and their checks are in
it).  ``wait_until`` is the bounded poll both use; ``run_input`` runs a
command with text on its stdin, bounded too.
"""

import os
import signal
import subprocess
import time

from .lab import LabError, _kill_session, _pid_alive, _read_pid, _tail

SECURE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def clean_env(**extra):
    """A small root environment (Debian's secure_path), nothing of the caller's."""
    env = {"PATH": SECURE_PATH, "HOME": "/root", "LANG": "C.UTF-8"}
    env.update(extra)
    return env


def wait_until(predicate, timeout, interval=0.1):
    """Poll predicate() until it returns something true or *timeout* s pass; its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def run_input(argv, text, what, timeout=120.0):
    """Run *argv* with *text* on its stdin, in clean_env(): its stdout.

    LabError naming *what* when it fails or does not end within *timeout* s.
    """
    try:
        res = subprocess.run(argv, input=text, capture_output=True, text=True, timeout=timeout,
                             env=clean_env())
    except subprocess.TimeoutExpired as exc:
        raise LabError("%s did not finish within %ss" % (what, timeout)) from exc
    if res.returncode != 0:
        raise LabError("%s failed (exit %s): %s" % (what, res.returncode, (res.stderr or res.stdout).strip()[-2000:]))
    return res.stdout


def start(argv, pid_file, ready=lambda: True, env=None, log=None, timeout=30.0, cwd=None):
    """Start a daemon that forks into the background; its pid once ready()."""
    try:
        res = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                             env=env if env is not None else clean_env(), cwd=cwd,
                             timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise LabError("%s did not return within %ss" % (argv[0], timeout)) from exc
    if res.returncode != 0:
        raise LabError("%s failed (exit %s): %s\n%s" % (
            " ".join(argv), res.returncode, (res.stdout + res.stderr).strip()[-2000:],
            _tail(log) if log else ""))

    def up():
        pid = _read_pid(pid_file)
        return pid if pid and _pid_alive(pid) and ready() else None

    pid = wait_until(up, timeout)
    if not pid:
        stop(_read_pid(pid_file))
        raise LabError("%s did not come up within %ss\n%s" % (
            argv[0], timeout, _tail(log, 40) if log else ""))
    return pid


def stop(pid, timeout=10.0):
    """SIGTERM *pid*, wait up to *timeout* s, then kill what is left of its session."""
    if not pid:
        return
    if _pid_alive(pid):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        wait_until(lambda: not _pid_alive(pid), timeout)
    _kill_session(pid)
