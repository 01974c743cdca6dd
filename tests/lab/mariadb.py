"""A private MariaDB server on 127.0.0.1 for the test suite (Debian's mariadb-server).

    with MariaDB() as db:                       # a free port, data in a temp dir
        ido = db.create_database("ido")         # .name, .user, .password
        db.load(ido, "/usr/share/icinga2-ido-mysql/schema/mysql.sql")
        db.query(ido, "SELECT COUNT(*) FROM icinga_objects")   # [["70"]]

Everything lives in one temporary directory:

    data/         the databases (mariadb-install-db), owned by mysql
    run/          the socket and the pid file, owned by mysql
    mariadb.log   the server's console output

The server runs in the foreground in a session of its own, started as root
and switching to the user mysql itself; it listens on 127.0.0.1 only, and
root logs in through the socket alone.  Each database gets a user of the
same name with a random password, allowed from 127.0.0.1.  Nothing of the
system's MariaDB (/etc/mysql, /var/lib/mysql, the service) is used or
touched.  stop() ends the whole session.
"""

import os
import pwd
import secrets
import socket
from types import SimpleNamespace

from . import daemon, packages
from .carbon import ForegroundDaemon
from .lab import HOST, LabError, _run

PACKAGES = ("mariadb-server",)
RUN_AS = "mysql"
READY = "ready for connections"


def install(verbose=False):
    """Install mariadb-server if missing (as root); starts nothing."""
    return packages.ensure(PACKAGES, verbose=verbose)


def _identifier(name):
    """*name* if it is a safe SQL identifier (letters, digits, _), else LabError."""
    if not name.replace("_", "").isalnum():
        raise LabError("not a plain database name: %r" % name)
    return name


class MariaDB(ForegroundDaemon):
    """A private MariaDB; start() / stop(), or use it as a context manager.

    Attributes after start(): host, port, socket, dir.
    """

    PREFIX = "cmr-mariadb-"

    def __init__(self, dir=None, start_timeout=60.0):
        super().__init__(dir, start_timeout)
        self.host = HOST
        self.ports = {}

    @property
    def port(self):
        return self.ports["sql"]

    @property
    def socket(self):
        return self._p("run", "mariadb.sock")

    @property
    def log_file(self):
        return self._p("mariadb.log")

    def log_files(self):
        return [self.log_file]

    def start(self):
        """Make the data directory and start the server on a free port."""
        if os.geteuid() != 0:
            raise LabError("the private MariaDB is started as root (it drops to %s)" % RUN_AS)
        install()
        self.make_dir()
        mysql = pwd.getpwnam(RUN_AS)
        for sub in ("data", "run"):
            os.makedirs(self._p(sub), exist_ok=True)
            os.chown(self._p(sub), mysql.pw_uid, mysql.pw_gid)
        _run(["mariadb-install-db", "--no-defaults", "--datadir=" + self._p("data"), "--user=" + RUN_AS,
              "--auth-root-authentication-method=socket", "--skip-test-db"], timeout=120,
             env=daemon.clean_env())

        def argv():
            return ["mariadbd", "--no-defaults", "--datadir=" + self._p("data"), "--user=" + RUN_AS,
                    "--bind-address=" + HOST, "--port=%d" % self.port, "--socket=" + self.socket,
                    "--pid-file=" + self._p("run", "mariadb.pid"), "--skip-log-bin", "--skip-name-resolve",
                    "--innodb-buffer-pool-size=32M", "--character-set-server=utf8mb4"]

        return self.start_on_free_ports(("sql",), argv, self.log_file, self._ready, "mariadbd")

    def _ready(self):
        try:
            with open(self.log_file, errors="replace") as fh:
                if READY not in fh.read():
                    return False
            socket.create_connection((HOST, self.port), timeout=1).close()
            return True
        except OSError:
            return False

    # ------------------------------------------------------------------ SQL

    def _client(self, database=None):
        argv = ["mariadb", "--no-defaults", "--socket=" + self.socket, "--user=root", "--batch",
                "--skip-column-names"]
        return argv + ([_identifier(database)] if database else [])

    def execute(self, sql, database=None, timeout=120):
        """Run *sql* (statements, or a whole schema file's text) as root; its output."""
        return daemon.run_input(self._client(database), sql, "mariadb", timeout)

    def query(self, db, sql):
        """The rows of *sql* in the database *db* (a create_database() result), each a list of strings."""
        return [line.split("\t") for line in self.execute(sql, db.name).splitlines()]

    def create_database(self, name, charset="utf8mb4"):
        """A new database *name* and its user (same name, random password, from 127.0.0.1 only)."""
        name = _identifier(name)
        password = secrets.token_hex(16)
        self.execute("CREATE DATABASE %s CHARACTER SET %s;\n"
                     "CREATE USER '%s'@'%s' IDENTIFIED BY '%s';\n"
                     "GRANT ALL ON %s.* TO '%s'@'%s';\n" % (name, charset, name, HOST, password, name, name, HOST))
        return SimpleNamespace(name=name, user=name, password=password, host=HOST, port=self.port)

    def load(self, db, path):
        """Run the SQL file *path* (e.g. a schema) in the database *db*."""
        with open(path, encoding="utf-8") as fh:
            self.execute(fh.read(), db.name)
