"""A private graphite-web on 127.0.0.1 for the test suite, reading a private carbon's whisper files.

    with Carbon() as carbon, GraphiteWeb(carbon.whisper_dir) as web:
        web.url                                 # http://127.0.0.1:PORT
        web.requests()                          # the paths asked for, e.g. /render?target=...
        web.render_json(["icinga2.h.services.s.c.perfdata.rtt.value"], "-5min")   # the points

Debian's graphite-web is served by Django's own server (`django-admin
runserver`, without autoreload) as the user _graphite, on a free port:
no Apache, no WSGI, nothing of /etc/graphite or /var/lib/graphite is
written.  Everything lives in one temporary directory:

    lab_graphite_settings.py   the settings (GRAPHITE_SETTINGS_MODULE): the
                               carbon's WHISPER_DIR, a random SECRET_KEY,
                               the sqlite database and logs below storage/
    storage/                   graphite.db (made by `migrate`), log/webapp/
    graphite-web.log           the server's console: one line per request

stop() ends the server's whole session.
"""

import json
import os
import pwd
import re
import secrets
import urllib.parse
import urllib.request

from . import daemon, packages
from .carbon import RUN_AS, ForegroundDaemon
from .lab import HOST, LabError, _run

PACKAGES = ("graphite-web",)
DJANGO_ADMIN = "/usr/bin/django-admin"
SETTINGS_MODULE = "lab_graphite_settings"
# One request in runserver's console: "GET /render?target=... HTTP/1.1" 200 1234
REQUEST = re.compile(r'"GET (?P<path>\S+) HTTP/[\d.]+" (?P<status>\d{3})')


def install(verbose=False):
    """Install graphite-web if missing (as root); starts nothing."""
    return packages.ensure(PACKAGES, verbose=verbose)


class GraphiteWeb(ForegroundDaemon):
    """graphite-web for *whisper_dir*; start() / stop(), or use it as a context manager.

    Attributes after start(): url, port, dir.
    """

    PREFIX = "cmr-graphite-web-"

    def __init__(self, whisper_dir, dir=None, start_timeout=60.0):
        super().__init__(dir, start_timeout)
        self.whisper_dir = whisper_dir
        self.ports = {}

    @property
    def port(self):
        return self.ports["http"]

    @property
    def url(self):
        return "http://%s:%d" % (HOST, self.port)

    @property
    def log_file(self):
        return self._p("graphite-web.log")

    def log_files(self):
        return [self.log_file, self._p("storage", "log", "webapp", "exception.log")]

    def _settings(self):
        storage = self._p("storage")
        values = {
            "SECRET_KEY": secrets.token_hex(24),
            "ALLOWED_HOSTS": [HOST],
            "TIME_ZONE": "UTC",
            "GRAPHITE_ROOT": "/usr/share/graphite-web",
            "CONF_DIR": "/etc/graphite",
            "STATIC_ROOT": "/usr/share/graphite-web/static",
            "STORAGE_DIR": storage,
            "LOG_DIR": os.path.join(storage, "log", "webapp"),
            "INDEX_FILE": os.path.join(storage, "index"),
            "WHISPER_DIR": self.whisper_dir,
            "STANDARD_DIRS": [self.whisper_dir],  # even before carbon made it
            "LOG_ROTATION": False,
            "DEFAULT_XFILES_FACTOR": 0,
            "FUNCTION_PLUGINS": [],
            "DATABASES": {"default": {"NAME": os.path.join(storage, "graphite.db"),
                                      "ENGINE": "django.db.backends.sqlite3"}},
        }
        return "# private graphite-web of the check_mail_roundtrip tests (generated)\n" + "".join(
            "%s = %r\n" % item for item in values.items())

    def _django(self, *args):
        """django-admin with graphite's settings as _graphite: the argv."""
        return ["runuser", "-u", RUN_AS, "--", "env", "PYTHONPATH=" + self.dir,
                "GRAPHITE_SETTINGS_MODULE=" + SETTINGS_MODULE, DJANGO_ADMIN, *args,
                "--settings", "graphite.settings"]

    def start(self):
        """Write the settings, make the database, serve on a free port until it answers."""
        if os.geteuid() != 0:
            raise LabError("the private graphite-web is started as root (it runs as %s)" % RUN_AS)
        install()
        self.make_dir()
        graphite = pwd.getpwnam(RUN_AS)
        os.makedirs(self._p("storage", "log", "webapp"), exist_ok=True)
        for path in (self._p("storage"), self._p("storage", "log"), self._p("storage", "log", "webapp")):
            os.chown(path, graphite.pw_uid, graphite.pw_gid)
        with open(self._p(SETTINGS_MODULE + ".py"), "w") as fh:
            fh.write(self._settings())
        os.chmod(self._p(SETTINGS_MODULE + ".py"), 0o644)
        try:
            _run(self._django("migrate", "--run-syncdb", "-v", "0"), timeout=120, env=daemon.clean_env())
        except LabError:
            self.stop()
            raise
        return self.start_on_free_ports(
            ("http",), lambda: self._django("runserver", "--noreload", "%s:%d" % (HOST, self.port)),
            self.log_file, self._answers, "graphite-web")

    def _answers(self):
        try:
            with urllib.request.urlopen(self.url + "/metrics/find?query=*", timeout=5) as res:
                return res.status == 200
        except OSError:
            return False

    def requests(self):
        """[(path, status)] of every request the server logged so far."""
        try:
            with open(self.log_file, errors="replace") as fh:
                text = fh.read()
        except OSError:
            return []
        return [(m.group("path"), int(m.group("status"))) for m in REQUEST.finditer(text)]

    def render_json(self, targets, since):
        """graphite-web's answer to /render of *targets* from *since* (e.g. "-5min") as JSON:
        [{"target": ..., "datapoints": [[value, time], ...]}, ...]."""
        query = urllib.parse.urlencode([("target", t) for t in targets] + [("from", since), ("format", "json")])
        with urllib.request.urlopen(self.url + "/render?" + query, timeout=30) as res:
            return json.loads(res.read())
