"""The mail lab's faults, and the releaser process behind the delay fault.

Faults(layout, postfix, dovecot)
    hold, release, drop, delay(seconds, only=HEADER), junk, imap_down, imap_up, clear.
    Mail-path faults (hold, delay, drop) are Postfix header_checks (only one
    at a time); junk is a global sieve script filing into Junk (or another folder); imap-down
    gives the IMAP listeners port 0 and reloads Dovecot.  The faults that
    are set live in faults.json, shared by every process using the lab.
Releaser(layout)
    the detached releaser.py of the delay fault: start, stop, alive.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time

from .dovecot import JUNK_SCRIPT_OFF
from .procs import _pid_alive, _read_pid, _wait_port, _write

# Header checks per mail-path fault (only one of them is active at a time).
HEADER_CHECKS = {
    None: "",
    "hold": "/^/ HOLD mail lab fault: hold\n",
    "delay": "/^/ HOLD mail lab fault: delay\n",
    "drop": "/^/ DISCARD mail lab fault: drop\n",
}
JUNK_SCRIPT_ON = """\
# mail lab: junk fault, every mail goes to the folder %s (made if missing)
require ["fileinto", "editheader", "mailbox"];
addheader "X-Spam-Flag" "YES";
fileinto :create "%s";
stop;
"""
NO_FAULTS = {"path": None, "delay": 0, "only": None, "junk": False, "imap_down": False}


class Releaser:
    """releaser.py, detached in its own session, its pid in run/releaser.pid."""

    def __init__(self, layout):
        self.layout = layout
        self.proc = None

    def pidfile(self):
        return self.layout.p("run", "releaser.pid")

    def alive(self):
        pid = _read_pid(self.pidfile())
        if not pid or not _pid_alive(pid):
            return False
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as fh:
                cmd = fh.read().decode(errors="replace")
        except OSError:
            return False
        return "releaser" in cmd and self.layout.dir in cmd

    def start(self, seconds):
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "releaser.py")
        log = open(self.layout.p("log", "releaser.log"), "a")
        try:
            proc = subprocess.Popen(
                [sys.executable, script, "--dir", self.layout.dir, "--seconds", str(seconds)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True, close_fds=True)
        finally:
            log.close()
        self.proc = proc
        _write(self.pidfile(), "%d\n" % proc.pid)

    def stop(self):
        pidfile = self.pidfile()
        if self.alive():
            pid = _read_pid(pidfile)
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline and _pid_alive(pid):
                if self.proc is not None:
                    self.proc.poll()
                time.sleep(0.02)
            if _pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
        if self.proc is not None:
            try:
                self.proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                pass
            self.proc = None
        if os.path.exists(pidfile):
            os.unlink(pidfile)


class Faults:
    def __init__(self, layout, postfix, dovecot):
        self.layout = layout
        self.postfix = postfix
        self.dovecot = dovecot
        self.releaser = Releaser(layout)

    def load(self):
        """The faults that are set, e.g. {"path": "hold", "delay": 0, ...}."""
        try:
            with open(self.layout.faults_file) as fh:
                return {**NO_FAULTS, **json.load(fh)}
        except (OSError, ValueError):
            return dict(NO_FAULTS)

    def save(self, faults):
        _write(self.layout.faults_file, json.dumps(faults, sort_keys=True) + "\n")

    def apply(self, new, force=False):
        """Make the servers match *new*; force: rewrite everything (at start)."""
        old = self.load()
        if force or old["path"] != new["path"] or old["only"] != new["only"]:
            checks = HEADER_CHECKS[new["path"]]
            if new["only"] and checks:  # the fault hits only mail with this header
                checks = checks.replace("/^/", "/^%s:/" % new["only"], 1)
            self.postfix.write_header_checks(checks)
        if force or old["junk"] != new["junk"]:
            folder = "Junk" if new["junk"] is True else new["junk"]  # True: as older labs saved it
            self.dovecot.write_sieve("10-faults.sieve",
                                     JUNK_SCRIPT_ON % (folder, folder) if folder else JUNK_SCRIPT_OFF)
        self.save(new)
        if not force and old["imap_down"] != new["imap_down"]:
            ports = self.layout.ports
            self.dovecot.write_listeners(imap=not new["imap_down"])
            self.dovecot.reload()
            _wait_port(ports["imap"], up=not new["imap_down"])
            _wait_port(ports["imaps"], up=not new["imap_down"])
        if new["path"] != "delay" or new["delay"] != old["delay"] or force:
            self.releaser.stop()
        if new["path"] == "delay" and (force or not self.releaser.alive()):
            self.releaser.start(new["delay"])

    def set(self, **changes):
        self.apply({**self.load(), **changes})

    def hold(self):
        """Accept mail but keep it in the hold queue (until release())."""
        self.set(path="hold", delay=0, only=None)

    def release(self):
        """Stop holding and deliver every held mail now."""
        self.set(path=None, delay=0, only=None)
        self.postfix.release_held()

    def drop(self):
        """Accept mail with 250 and throw it away (header_checks DISCARD)."""
        self.set(path="drop", delay=0, only=None)

    def delay(self, seconds, only=None):
        """Deliver every accepted mail (or, with *only*, a header name: each mail that
        has that header) no earlier than `seconds` after acceptance."""
        seconds = float(seconds)
        if seconds <= 0:
            return self.set(path=None, delay=0, only=None)
        if only is not None and not re.fullmatch(r"[A-Za-z0-9-]+", only):
            raise ValueError("a header name: %r" % only)
        self.set(path="delay", delay=seconds, only=only)

    def junk(self, on=True, folder="Junk"):
        """Deliver into the Junk folder (or *folder*, made if missing) instead of INBOX."""
        if '"' in folder or "\\" in folder:
            raise ValueError("a folder name for the junk fault without quotes or backslashes")
        self.set(junk=folder if on else False)

    def imap_down(self):
        """IMAP and IMAPS refuse connections; SMTP, LMTP and POP3 keep working."""
        self.set(imap_down=True)

    def imap_up(self):
        self.set(imap_down=False)

    def clear(self):
        """Clear every fault (nothing is rewritten when none is set)."""
        if self.load() != NO_FAULTS:
            self.apply(dict(NO_FAULTS))
