"""A private Icinga 2 daemon for the test suite, run from a temporary directory.

    icinga = Icinga(objects_text, plugin_dir="/usr/lib/nagios/plugins",
                    graphite=(carbon.host, carbon.port), includes=[command_file])
    with icinga:                                  # validates, then starts
        icinga.wait_for_state("host!service", "WARNING", after=icinga.mark())

Everything lives in one temporary directory; nothing under /etc/icinga2,
/var/lib/icinga2 or systemd is used or touched:

    icinga2.conf   PluginDir, the ITL and plugin commands, the application,
                   the checker, a FileLogger at debug severity, a
                   GraphiteWriter (thresholds sent too), then `includes`
    objects.conf   the caller's hosts and services (0640 root:nagios, since it
                   may hold passwords)
    data/ log/ cache/ spool/ run/   the daemon's DataDir, LogDir, CacheDir,
                   SpoolDir and InitRunDir (given with -DConfiguration.*),
                   owned by nagios
    log/icinga2.log   the FileLogger; console.log the daemon's stdout/stderr

The daemon is started as root in the foreground, in a session of its own,
and drops to the user nagios itself (Debian's build default), so checks run
as nagios exactly as on a monitoring server.  The configuration is checked
with `icinga2 daemon -C` before the start.  stop() ends the whole session,
check plugins included.
"""

import grp
import os
import pwd
import re
import tempfile

from . import daemon, packages
from .carbon import ForegroundDaemon
from .lab import LabError, _run

PACKAGES = ("icinga2",)
ICINGA2 = "/usr/sbin/icinga2"
RUN_AS = "nagios"
DIRS = {"DataDir": "data", "LogDir": "log", "CacheDir": "cache", "SpoolDir": "spool",
        "InitRunDir": "run"}
STARTED = "Activated all objects."  # logged once every object is running
# Icinga's own record of a hard state change (FileLogger, severity notice).
_STATE_CHANGE = re.compile(r"State Change: Checkable '(?P<name>[^']*)' hard state change "
                           r"from (?P<old>\w+) to (?P<new>\w+) detected")


def install(verbose=False):
    """Install icinga2 if missing (as root); starts nothing."""
    return packages.ensure(PACKAGES, verbose=verbose)


def string(value):
    """*value* as an Icinga 2 string literal (no macros expanded in it)."""
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"').replace("$", "$$")
    return '"%s"' % escaped.replace("\n", "\\n")


def literal(value):
    """*value* in Icinga 2's language: booleans and numbers as such, anything else a string."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return string(value)


def ensure_readable(path, user=RUN_AS):
    """LabError unless *user* can read *path* (e.g. a CA file for the checks)."""
    res = _run(["runuser", "-u", user, "--", "test", "-r", path], check=False)
    if res.returncode != 0:
        raise LabError("%s cannot read %s" % (user, path))


def private_dir(prefix, user=RUN_AS):
    """A new temporary directory owned by *user*, mode 0700 (e.g. a state directory)."""
    path = tempfile.mkdtemp(prefix=prefix)
    pw = pwd.getpwnam(user)
    os.chown(path, pw.pw_uid, pw.pw_gid)
    return path


class Icinga(ForegroundDaemon):
    """A private Icinga 2; start() / stop(), or use it as a context manager.

    validate() alone (then stop()) checks a configuration without starting.
    """

    PREFIX = "cmr-icinga-"

    def __init__(self, objects, plugin_dir, graphite=None, includes=(), dir=None,
                 start_timeout=30.0):
        super().__init__(dir, start_timeout)
        self.objects = objects
        self.plugin_dir = plugin_dir
        self.graphite = graphite
        self.includes = [os.path.abspath(path) for path in includes]

    @property
    def log_file(self):
        return self._p("log", "icinga2.log")

    def log_files(self):
        return [self.log_file, self._p("console.log")]

    # ------------------------------------------------------------------ config

    def _main_conf(self):
        parts = [
            "// private Icinga 2 of the check_mail_roundtrip tests (generated)",
            "const PluginDir = %s" % string(self.plugin_dir),
            "include <itl>",
            "include <plugins>",
            'object IcingaApplication "app" { }',
            'object CheckerComponent "checker" { }',
            'object FileLogger "main-log" {\n    path = %s\n    severity = "debug"\n}'
            % string(self.log_file),
        ]
        if self.graphite:
            host, port = self.graphite
            parts.append('object GraphiteWriter "graphite" {\n    host = %s\n    port = %s\n'
                         '    enable_send_thresholds = true\n}' % (string(host), string(port)))
        parts += ["include %s" % string(path) for path in self.includes]
        parts.append("include %s" % string(self._p("objects.conf")))
        return "\n".join(parts) + "\n"

    def _write_config(self):
        nagios = pwd.getpwnam(RUN_AS)
        for sub in DIRS.values():
            os.makedirs(self._p(sub), exist_ok=True)
            os.chown(self._p(sub), nagios.pw_uid, nagios.pw_gid)
            os.chmod(self._p(sub), 0o750)
        with open(self._p("icinga2.conf"), "w") as fh:
            fh.write(self._main_conf())
        path = self._p("objects.conf")
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640), "w") as fh:
            fh.write(self.objects)
        os.chown(path, 0, grp.getgrnam(RUN_AS).gr_gid)
        os.chmod(path, 0o640)

    def command(self, *extra):
        """The icinga2 daemon command line for this directory."""
        defines = ["-DConfiguration.%s=%s" % (key, self._p(sub)) for key, sub in DIRS.items()]
        return [ICINGA2, "daemon", "-c", self._p("icinga2.conf"), *defines, *extra]

    def validate(self, *defines):
        """Write the configuration, then `icinga2 daemon -C` (with *defines*, e.g.
        "-DNodeName=master1.example.org"): its output.

        LabError when Icinga rejects the configuration.
        """
        if os.geteuid() != 0:
            raise LabError("the private Icinga 2 is started as root (it drops to %s)" % RUN_AS)
        install()
        self.make_dir()
        self._write_config()
        res = _run(self.command("-C", *defines), check=False, timeout=60, env=daemon.clean_env())
        if res.returncode != 0:
            raise LabError("icinga2 rejected the configuration (exit %s):\n%s"
                           % (res.returncode, (res.stdout + res.stderr)[-3000:]))
        return res.stdout

    # ------------------------------------------------------------------ start

    def start(self):
        """validate(), start the daemon, wait until it has activated every object.

        On failure everything is stopped and removed again; LabError says why.
        """
        try:
            self.validate()
            self.spawn(self.command(), self._p("console.log"))
            self.wait_ready(lambda: STARTED in self.log_text(), "icinga2")
        except BaseException:
            self.stop()
            raise
        return self

    # -------------------------------------------------------------------- log

    def log_text(self):
        try:
            with open(self.log_file, errors="replace") as fh:
                return fh.read()
        except OSError:
            return ""

    def log_lines(self):
        return self.log_text().splitlines()

    def mark(self):
        """A position in the log: lines written from now on come after it."""
        return len(self.log_lines())

    def state_changes(self, checkable, after=0):
        """[(old, new)] hard state changes of *checkable* ("host!service") logged after *after*."""
        out = []
        for line in self.log_lines()[after:]:
            m = _STATE_CHANGE.search(line)
            if m and m.group("name") == checkable:
                out.append((m.group("old"), m.group("new")))
        return out

    def wait_for_state(self, checkable, state, after=0, timeout=60.0):
        """Poll the log until the latest hard state change of *checkable* after *after*
        is to *state*.  Returns the changes after *after*; LabError on timeout.
        """
        def reached():
            changes = self.state_changes(checkable, after)
            return bool(changes and changes[-1][1] == state)

        daemon.wait_until(lambda: reached() or not self.running, timeout, interval=0.5)
        if not reached():
            raise LabError("%s did not turn %s within %ss (changes: %s)\n%s"
                           % (checkable, state, timeout, self.state_changes(checkable, after),
                              self.logs()))
        return self.state_changes(checkable, after)
