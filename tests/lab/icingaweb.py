"""A private Icinga Web 2 on 127.0.0.1, with the monitoring (IDO), graphite and director modules.

    db = MariaDB().start()
    ido = prepare_ido(db)                       # database and schema for Icinga 2's IDO
    objects = ido_object(ido) + api_user_object(api)   # into the private Icinga 2's configuration
    ...                                         # start that Icinga 2 (ApiListener on api.port)
    with IcingaWeb(db, ido, api, graphite.url, templates=[ini]) as web:
        web.cli("director", "basket", "restore", input=basket_json)
        web.url("/monitoring/service/show", host="h", service="s")

Debian's Icinga Web 2 is served by PHP's built-in web server (the router
`icingacli web serve` uses) as www-data, on a free port of 127.0.0.1, with
a configuration directory of its own (ICINGAWEB_CONFIGDIR): nothing of
/etc/icingaweb2, /var/lib/icingaweb2 or Apache is used.  Logging in is the
external backend: the server's environment names the user (REMOTE_USER),
so every request is that user's, who has every permission; a browser needs
no cookie.  Everything lives in one temporary directory:

    etc/        config.ini, resources.ini (the three databases),
                authentication.ini, roles.ini, enabledModules/, and
                modules/monitoring/backends.ini (the IDO),
                modules/graphite/config.ini (the private graphite-web; graphs
                of the last GRAPH_MINUTES minutes) and templates/ (the
                templates given), modules/director/config.ini, kickstart.ini
    storage/    ICINGAWEB_STORAGEDIR; sessions/ PHP's sessions
    log/        icingaweb2.log (Icinga Web's errors), php.log (the server's console)

start() makes the Icinga Web database (its schema loaded) and the Director's
(migrated by `icingacli director migration run`), then runs the Director's
kickstart against the Icinga 2 API, so the Director knows the endpoint, the
zones and the commands Icinga already has, and can deploy to it.
"""

import base64
import json
import os
import pwd
import shutil
import ssl
import urllib.error
import urllib.parse
import urllib.request

from . import daemon, packages
from .carbon import ForegroundDaemon
from .icinga import string
from .lab import HOST, LabError

PACKAGES = ("icinga2-ido-mysql", "icingaweb2", "icingacli", "icingaweb2-module-monitoring",
            "icingaweb2-module-graphite", "icingaweb2-module-director", "php-cli", "php-cgi", "php-mysql",
            "php-curl", "php-intl", "php-mbstring", "php-gd")
# No database set up by dbconfig-common, no IDO feature enabled in the system's Icinga 2.
DEBCONF = ("icinga2-ido-mysql icinga2-ido-mysql/dbconfig-install boolean false\n"
           "icinga2-ido-mysql icinga2-ido-mysql/enable boolean false\n")
RUN_AS = "www-data"
USER = "labadmin"
MODULES = ("monitoring", "graphite", "director", "incubator", "reactbundle")
MODULE_DIR = "/usr/share/icingaweb2/modules"
PUBLIC_DIR = "/usr/share/icingaweb2/public"
ROUTER = "/usr/share/php/Icinga/Application/webrouter.php"
ICINGACLI = "/usr/bin/icingacli"
IDO_SCHEMA = "/usr/share/icinga2-ido-mysql/schema/mysql.sql"
WEB_SCHEMA = "/usr/share/icingaweb2/schema/mysql.schema.sql"
GRAPH_MINUTES = 5
PHP_WORKERS = 4


def install(verbose=False):
    """Install Icinga Web 2, its modules, PHP and the IDO if missing (as root); starts nothing."""
    return packages.ensure(PACKAGES, debconf=DEBCONF, verbose=verbose)


def prepare_ido(db):
    """The IDO's database in *db* (a started MariaDB), with Icinga 2's schema loaded."""
    install()
    ido = db.create_database("icinga_ido")
    db.load(ido, IDO_SCHEMA)
    return ido


def ido_object(ido):
    """Icinga 2's IdoMysqlConnection writing to the database *ido*."""
    return ('object IdoMysqlConnection "ido-mysql" {\n    host = %s\n    port = %d\n    user = %s\n'
            '    password = %s\n    database = %s\n}\n'
            % (string(ido.host), ido.port, string(ido.user), string(ido.password), string(ido.name)))


def api_user_object(api):
    """Icinga 2's ApiUser for Icinga Web and the Director (every permission)."""
    return ('object ApiUser %s {\n    password = %s\n    permissions = [ "*" ]\n}\n'
            % (string(api.user), string(api.password)))


def api_get(api, path):
    """The JSON answer of the Icinga 2 API *api* (host, port, user, password, ca_file) to GET *path*;
    None when it answers 404 (no such object yet) or does not answer (Icinga restarting after a
    deployment).  The certificate is checked against the CA, not the name (it is the node's name,
    not 127.0.0.1)."""
    context = ssl.create_default_context(cafile=api.ca_file)
    context.check_hostname = False
    request = urllib.request.Request("https://%s:%d%s" % (api.host, api.port, path), headers={
        "Accept": "application/json",
        "Authorization": "Basic " + base64.b64encode(("%s:%s" % (api.user, api.password)).encode()).decode()})
    try:
        with urllib.request.urlopen(request, timeout=30, context=context) as res:
            return json.loads(res.read())
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise LabError("Icinga 2 API: GET %s: %s %s" % (path, exc.code, exc.read()[:500])) from exc
    except (urllib.error.URLError, ConnectionError):
        return None


def ini(sections):
    """INI text of {section: {key: value}}, every value quoted as Icinga Web writes it."""
    out = []
    for section, values in sections.items():
        out.append("[%s]" % section)
        out += ['%s = "%s"' % (key, str(value).replace('"', '\\"')) for key, value in values.items()]
        out.append("")
    return "\n".join(out)


def _db_resource(db, charset):
    return {"type": "db", "db": "mysql", "host": db.host, "port": db.port, "dbname": db.name,
            "username": db.user, "password": db.password, "charset": charset}


class IcingaWeb(ForegroundDaemon):
    """Icinga Web 2 on the databases of *mariadb*; start() / stop(), or use it as a context manager.

    *ido* is prepare_ido()'s database, *api* the Icinga 2 API (host, port,
    user, password, endpoint: the node's name), *graphite_url* the
    graphite-web, *templates* graphite module template files.
    Attributes after start(): port, base_url, dir, director_db (the Director's database).
    """

    PREFIX = "cmr-icingaweb-"

    def __init__(self, mariadb, ido, api, graphite_url, templates=(), dir=None, start_timeout=60.0):
        super().__init__(dir, start_timeout)
        self.mariadb = mariadb
        self.ido = ido
        self.api = api
        self.graphite_url = graphite_url
        self.templates = [os.path.abspath(path) for path in templates]
        self.ports = {}
        self.director_db = None

    @property
    def port(self):
        return self.ports["http"]

    @property
    def base_url(self):
        return "http://%s:%d" % (HOST, self.port)

    @property
    def config_dir(self):
        return self._p("etc")

    def log_files(self):
        return [self._p("log", "php.log"), self._p("log", "icingaweb2.log")]

    def url(self, path, **params):
        """The address of *path* (e.g. /monitoring/service/show) with *params* as its query."""
        query = urllib.parse.urlencode(params)
        return self.base_url + path + ("?" + query if query else "")

    # ---------------------------------------------------------------- config

    def _write(self, relative, sections):
        path = self._p("etc", relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as fh:
            fh.write(ini(sections))

    def _write_config(self, web_db, director_db):
        self._write("config.ini", {
            "global": {"show_stacktraces": "1", "config_backend": "db", "config_resource": "icingaweb_db",
                       "module_path": MODULE_DIR},
            "logging": {"log": "file", "level": "WARNING", "file": self._p("log", "icingaweb2.log")}})
        self._write("resources.ini", {"icingaweb_db": _db_resource(web_db, "utf8mb4"),
                                      "icinga_ido": _db_resource(self.ido, "utf8mb4"),
                                      "director_db": _db_resource(director_db, "utf8")})
        self._write("authentication.ini", {"lab-external": {"backend": "external"}})
        self._write("roles.ini", {"lab-admins": {"users": USER, "permissions": "*"}})
        self._write("modules/monitoring/backends.ini", {"icinga": {"type": "ido", "resource": "icinga_ido"}})
        self._write("modules/graphite/config.ini", {
            "graphite": {"url": self.graphite_url},
            "ui": {"default_time_range": GRAPH_MINUTES, "default_time_range_unit": "minutes"}})
        self._write("modules/director/config.ini", {"db": {"resource": "director_db"}})
        self._write("modules/director/kickstart.ini", {"config": {
            "endpoint": self.api.endpoint, "host": self.api.host, "port": self.api.port,
            "username": self.api.user, "password": self.api.password}})
        os.makedirs(self._p("etc", "enabledModules"), exist_ok=True)
        for module in MODULES:
            os.symlink(os.path.join(MODULE_DIR, module), self._p("etc", "enabledModules", module))
        templates = self._p("etc", "modules", "graphite", "templates")
        os.makedirs(templates, exist_ok=True)
        for path in self.templates:
            shutil.copyfile(path, os.path.join(templates, os.path.basename(path)))

    def _own(self):
        """Everything in the directory belongs to www-data (the server and icingacli run as it)."""
        web = pwd.getpwnam(RUN_AS)
        for top, dirs, files in os.walk(self.dir):
            for name in dirs + files:
                os.lchown(os.path.join(top, name), web.pw_uid, web.pw_gid)

    def _env(self):
        return ["ICINGAWEB_CONFIGDIR=" + self.config_dir, "ICINGAWEB_STORAGEDIR=" + self._p("storage")]

    # ----------------------------------------------------------------- start

    def start(self):
        """Databases, configuration, the Director's schema and kickstart, then serve on a free port."""
        if os.geteuid() != 0:
            raise LabError("the private Icinga Web 2 is started as root (it runs as %s)" % RUN_AS)
        install()
        self.make_dir()
        try:
            web_db = self.mariadb.create_database("icingaweb")
            self.mariadb.load(web_db, WEB_SCHEMA)
            director_db = self.director_db = self.mariadb.create_database("director", charset="utf8")
            for sub in ("log", "storage/sessions"):
                os.makedirs(self._p(sub), exist_ok=True)
            self._write_config(web_db, director_db)
            self._own()
            self.cli("director", "migration", "run")
            self.cli("director", "kickstart", "run")
            self.start_on_free_ports(("http",), self._server, self._p("log", "php.log"), self._answers,
                                     "Icinga Web 2 (php -S)")
        except BaseException:
            self.stop()
            raise
        return self

    def _server(self):
        return ["runuser", "-u", RUN_AS, "--", "env", *self._env(), "REMOTE_USER=" + USER,
                "PHP_CLI_SERVER_WORKERS=%d" % PHP_WORKERS, "php", "-d",
                "session.save_path=" + self._p("storage", "sessions"), "-S", "%s:%d" % (HOST, self.port),
                "-t", PUBLIC_DIR, ROUTER]

    def _answers(self):
        status, _ = self.get("/authentication/login")
        return status is not None

    # ------------------------------------------------------------------ use

    def cli(self, *args, input=None, timeout=120):
        """`icingacli ARGS` on this configuration, as www-data: its stdout; LabError when it fails."""
        argv = ["runuser", "-u", RUN_AS, "--", "env", *self._env(), ICINGACLI, *args]
        return daemon.run_input(argv, input or "", "icingacli " + " ".join(args), timeout)

    def get(self, path, **params):
        """(status, body) of a GET of *path*; (None, reason) when nothing answers."""
        try:
            with urllib.request.urlopen(self.url(path, **params), timeout=30) as res:
                return res.status, res.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode("utf-8", "replace")
        except OSError as exc:
            return None, str(exc)
