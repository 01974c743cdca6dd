"""A private carbon-cache (Debian's graphite-carbon) on 127.0.0.1 for the test suite.

    with Carbon() as carbon:                  # free ports, storage in a temp dir
        writer_address = (carbon.host, carbon.port)   # plaintext line protocol
        carbon.series("icinga2.h.services.s.c.perfdata.rtt.value")  # [(time, value)]

Everything lives in one temporary directory:

    conf/        carbon.conf, storage-schemas.conf (1-second points for icinga2.*)
    storage/     whisper/ (the .wsp files), the pid file; owned by _graphite
    carbon.log   the daemon's console output (creates and updates are logged)

The daemon runs in the foreground in a session of its own and drops to the
user _graphite; it keeps no tag database (which would call a graphite-web on
port 80) and sends no metrics about itself.  stop() ends the whole session.
Whisper files are read back with Debian's python3-whisper run by
/usr/bin/python3, since the test virtualenv does not see Debian's packages.

ForegroundDaemon, the base class of Carbon, is what every such private
daemon needs (tests/lab/icinga.py uses it too): a directory of its own, the
daemon in the foreground in a new session, a bounded wait until it is ready,
and a stop that leaves no process behind.
"""

import json
import os
import pwd
import shutil
import socket
import subprocess
import tempfile

from . import daemon, packages
from .lab import HOST, LabError, _pick_ports, _run, _tail

PACKAGES = ("graphite-carbon", "python3-whisper")
CARBON = "/usr/bin/carbon-cache"
SYSTEM_PYTHON = "/usr/bin/python3"
RUN_AS = "_graphite"
PORT_NAMES = ("line", "pickle", "query")
RETENTIONS = "1s:1h"
# Prints {file: [[time, value], ...]} for the files named in argv, the last `seconds` of each.
_READER = """\
import json, sys, time, whisper
seconds, paths = float(sys.argv[1]), sys.argv[2:]
out = {}
for path in paths:
    (start, end, step), values = whisper.fetch(path, time.time() - seconds)
    out[path] = [[start + i * step, v] for i, v in enumerate(values) if v is not None]
print(json.dumps(out))
"""


def _listening(port):
    """Whether 127.0.0.1:port accepts a connection."""
    try:
        socket.create_connection((HOST, port), timeout=1).close()
        return True
    except OSError:
        return False


def install(verbose=False):
    """Install graphite-carbon and python3-whisper if missing (as root); starts nothing."""
    return packages.ensure(PACKAGES, verbose=verbose)


class ForegroundDaemon:
    """Base class: a daemon run in the foreground, in a session of its own, from a directory.

    A subclass's start() calls make_dir(), spawn() and wait_ready(); stop()
    ends the daemon's whole session and removes the directory if it was made
    here.  Usable as a context manager.  Subclasses name their logs in
    log_files() for the error messages.
    """

    PREFIX = "cmr-daemon-"

    def __init__(self, dir=None, start_timeout=30.0):
        self.dir = dir
        self.start_timeout = start_timeout
        self._proc = None
        self._made_dir = False

    def _p(self, *parts):
        return os.path.join(self.dir, *parts)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    def make_dir(self):
        """The directory (a new temporary one unless given), traversable by the daemon's user."""
        if self.dir is None:
            self.dir = tempfile.mkdtemp(prefix=self.PREFIX)
            self._made_dir = True
        os.chmod(self.dir, 0o755)
        return self.dir

    def spawn(self, argv, log_file):
        """Start *argv* in a new session, output appended to *log_file*."""
        with open(log_file, "a") as log:
            self._proc = subprocess.Popen(argv, cwd=self.dir, env=daemon.clean_env(),
                                          stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                          start_new_session=True, close_fds=True)

    def wait_ready(self, ready, what):
        """Wait, bounded by start_timeout, until ready(); LabError if the daemon ends first."""
        daemon.wait_until(lambda: not self.running or ready(), self.start_timeout)
        if not (self.running and ready()):
            raise LabError("%s did not start within %ss (exit %s):\n%s"
                           % (what, self.start_timeout, self._proc.poll(), self.logs()))

    def start_on_free_ports(self, names, argv, log_file, ready, what, tries=3):
        """Pick free ports for *names* (self.ports), then spawn argv() and wait until ready().

        A port picked as free may be taken before the daemon binds it: then
        new ports, up to *tries* times.  On failure everything is stopped.
        """
        last = None
        for _ in range(tries):
            self.ports = _pick_ports(names)
            try:
                self.spawn(argv(), log_file)
                self.wait_ready(ready, what)
                return self
            except LabError as exc:
                last = exc
                self.end()
                if "in use" not in str(exc).lower():
                    break
        self.stop()
        raise last

    def end(self):
        """Stop the daemon and whatever is left in its session, for sure; reap it."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        daemon.stop(proc.pid, timeout=15.0)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass

    def stop(self):
        """end(), then remove the directory if it was made here."""
        self.end()
        if self._made_dir and self.dir and os.path.isdir(self.dir):
            shutil.rmtree(self.dir, ignore_errors=True)

    @property
    def running(self):
        return self._proc is not None and self._proc.poll() is None

    def log_files(self):
        return []

    def logs(self, lines=30):
        """The tails of log_files() (for error messages)."""
        out = []
        for path in self.log_files() if self.dir else ():
            text = _tail(path, lines)
            if text:
                out.append("==> %s <==\n%s" % (path, text))
        return "\n".join(out)


class Carbon(ForegroundDaemon):
    """A private carbon-cache; start() / stop(), or use it as a context manager.

    Attributes after start(): host, port (the line receiver), ports (line,
    pickle, query), dir, whisper_dir.
    """

    PREFIX = "cmr-carbon-"

    def __init__(self, dir=None, retentions=RETENTIONS, start_timeout=30.0):
        super().__init__(dir, start_timeout)
        self.host = HOST
        self.retentions = retentions
        self.ports = {}

    @property
    def port(self):
        return self.ports["line"]

    @property
    def whisper_dir(self):
        return self._p("storage", "whisper")

    @property
    def log_file(self):
        return self._p("carbon.log")

    def path(self, metric):
        """The whisper file of a metric (dots are directories)."""
        return os.path.join(self.whisper_dir, *metric.split(".")) + ".wsp"

    def log_files(self):
        return [self.log_file]

    # ------------------------------------------------------------------ start

    def start(self):
        """Write the configuration and start carbon-cache on free ports."""
        if os.geteuid() != 0:
            raise LabError("the private carbon-cache is started as root (it drops to %s)" % RUN_AS)
        install()
        self.make_dir()
        graphite = pwd.getpwnam(RUN_AS)
        for sub in ("conf", "storage"):
            os.makedirs(self._p(sub), exist_ok=True)
        os.chown(self._p("storage"), graphite.pw_uid, graphite.pw_gid)

        def argv():
            self._write_config()
            return [CARBON, "--config=%s" % self._p("conf", "carbon.conf"),
                    "--pidfile=%s" % self._p("storage", "carbon-cache.pid"), "--nodaemon", "start"]

        return self.start_on_free_ports(PORT_NAMES, argv, self.log_file, lambda: _listening(self.port),
                                        "carbon-cache")

    def _write_config(self):
        with open(self._p("conf", "carbon.conf"), "w") as fh:
            fh.write(self._carbon_conf())
        with open(self._p("conf", "storage-schemas.conf"), "w") as fh:
            fh.write("# private carbon of the check_mail_roundtrip tests (generated)\n"
                     "[icinga2]\npattern = ^icinga2\\.\nretentions = %s\n\n"
                     "[default]\npattern = .*\nretentions = 60s:1d\n" % self.retentions)

    def _carbon_conf(self):
        storage = self._p("storage")
        lines = [
            "# private carbon-cache of the check_mail_roundtrip tests (generated)",
            "[cache]",
            "STORAGE_DIR = %s/" % storage,
            "LOCAL_DATA_DIR = %s/whisper/" % storage,
            "WHITELISTS_DIR = %s/lists/" % storage,
            "LOG_DIR = %s/log/" % storage,
            "PID_DIR = %s/" % storage,
            "USER = %s" % RUN_AS,
            "DATABASE = whisper",
            "ENABLE_TAGS = False",
            "CARBON_METRIC_INTERVAL = 0",
            "MAX_CACHE_SIZE = inf",
            "MAX_UPDATES_PER_SECOND = inf",
            "MAX_CREATES_PER_MINUTE = inf",
            "LOG_CREATES = True",
            "LOG_UPDATES = True",
            "ENABLE_UDP_LISTENER = False",
        ]
        for name, key in (("line", "LINE_RECEIVER"), ("pickle", "PICKLE_RECEIVER"),
                          ("query", "CACHE_QUERY")):
            lines += ["%s_INTERFACE = %s" % (key, HOST), "%s_PORT = %d" % (key, self.ports[name])]
        return "\n".join(lines) + "\n"

    # ---------------------------------------------------------------- reading

    def metrics(self, prefix=""):
        """Names of the metrics that have a whisper file, under *prefix* if given."""
        root = self.whisper_dir
        found = []
        for dirpath, _dirs, files in os.walk(root):
            rel = os.path.relpath(dirpath, root)
            for name in files:
                if name.endswith(".wsp"):
                    parts = ([] if rel == "." else rel.split(os.sep)) + [name[:-4]]
                    found.append(".".join(parts))
        return sorted(m for m in found if m.startswith(prefix))

    def read(self, metrics, seconds=3600):
        """{metric: [(time, value), ...]} of the points written in the last *seconds*.

        A metric without a whisper file yet maps to [].
        """
        paths = {m: self.path(m) for m in metrics}
        existing = [p for p in paths.values() if os.path.exists(p)]
        data = {}
        if existing:
            res = _run([SYSTEM_PYTHON, "-c", _READER, str(seconds), *existing], timeout=30)
            data = json.loads(res.stdout)
        return {m: [tuple(point) for point in data.get(p, [])] for m, p in paths.items()}

    def series(self, metric, seconds=3600):
        """[(time, value), ...] of one metric (see read())."""
        return self.read([metric], seconds)[metric]

    def wait_for(self, metrics, timeout=60.0):
        """Poll until every metric has a point; read() of them.  LabError on timeout."""
        def missing():
            return [m for m, points in self.read(metrics).items() if not points]

        daemon.wait_until(lambda: not missing(), timeout, interval=1.0)
        absent = missing()
        if absent:
            raise LabError("carbon: no points within %ss for %s\nmetrics present: %s\n%s"
                           % (timeout, ", ".join(absent), ", ".join(self.metrics()),
                              self.logs(20)))
        return self.read(metrics)
