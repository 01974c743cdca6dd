"""A private Nagios 4 (Debian's nagios4-core) for the tests, in a directory of its own.

    nagios = Nagios(cfg_files=["contrib/nagios/mail_roundtrip.cfg"], objects=LAB_CFG)
    nagios.start()                       # writes the config, nagios4 -v, nagios4 -d
    nagios.force_service_check("lab", "Mail round trip")
    svc = nagios.wait_service("lab", "Mail round trip", lambda s: s["has_been_checked"] == "1")
    nagios.stop()

Everything lives in one directory owned by the user nagios (the daemon drops
to it): nagios.cfg, resource.cfg ($USER1$ = /usr/lib/nagios/plugins),
templates.cfg, objects.cfg, status.dat, service-perfdata, nagios.log, rw/
(command file, query socket), checkresults/, tmp/.  Nothing of the system's
Nagios is used or touched.  The templates are this module's own and keep
every object passive unless it says `active_checks_enabled 1`: example
objects (a host mail.example.org) are loaded but never checked, so nothing
leaves the machine.  Must run as root.
"""

import os
import pwd
import shutil
import subprocess
import tempfile
import time

from . import daemon, packages
from .lab import LabError, _read_pid, _tail

NAGIOS = "/usr/sbin/nagios4"
PACKAGES = ("nagios4-core",)
USER = "nagios"
PLUGIN_DIR = "/usr/lib/nagios/plugins"
# One line per service check result, PNP4Nagios style (KEY::value, tab separated).
PERFDATA_TEMPLATE = "\\t".join("%s::$%s$" % (k, k) for k in (
    "TIMET", "HOSTNAME", "SERVICEDESC", "SERVICESTATE", "SERVICEOUTPUT",
    "LONGSERVICEOUTPUT", "SERVICEPERFDATA"))

TEMPLATES = """\
# Minimal templates under the usual names; everything passive unless enabled.
define timeperiod {
    timeperiod_name 24x7
    alias           always
    sunday          00:00-24:00
    monday          00:00-24:00
    tuesday         00:00-24:00
    wednesday       00:00-24:00
    thursday        00:00-24:00
    friday          00:00-24:00
    saturday        00:00-24:00
}
define command {
    command_name    check-host-alive
    command_line    /bin/true
}
define command {
    command_name    notify-nobody
    command_line    /bin/true
}
define contact {
    contact_name                    nobody
    host_notifications_enabled      0
    service_notifications_enabled   0
    host_notification_period        24x7
    service_notification_period     24x7
    host_notification_options       n
    service_notification_options    n
    host_notification_commands      notify-nobody
    service_notification_commands   notify-nobody
}
define host {
    name                    generic-host
    register                0
    active_checks_enabled   0
    check_period            24x7
    check_interval          5
    retry_interval          1
    max_check_attempts      1
    notifications_enabled   0
    notification_period     24x7
    notification_interval   0
    contacts                nobody
}
define host {
    name                    linux-server
    use                     generic-host
    register                0
    check_command           check-host-alive
}
define service {
    name                    generic-service
    register                0
    active_checks_enabled   0
    passive_checks_enabled  1
    process_perf_data       1
    check_period            24x7
    check_interval          10
    retry_interval          2
    max_check_attempts      3
    notifications_enabled   0
    notification_period     24x7
    notification_interval   0
    contacts                nobody
}
"""


class NagiosError(LabError):
    """The private Nagios could not do what was asked; the message says why."""


def install(verbose=False):
    """Debian's nagios4-core (as root); starts nothing."""
    packages.ensure(PACKAGES, verbose=verbose)
    if not os.access(NAGIOS, os.X_OK):
        raise NagiosError("%s is missing after installing %s" % (NAGIOS, " ".join(PACKAGES)))


def parse_status(text):
    """status.dat as a list of (block type, {field: value}); values stay strings."""
    blocks, kind, fields = [], None, None
    for line in text.split("\n"):
        stripped = line.strip()
        if stripped.endswith("{") and kind is None:
            kind, fields = stripped[:-1].strip(), {}
        elif stripped == "}" and kind is not None:
            blocks.append((kind, fields))
            kind = None
        elif kind is not None and "=" in stripped:
            key, value = line.lstrip("\t").split("=", 1)
            fields[key] = value
    return blocks


def parse_perfdata_line(line):
    """One service-perfdata line (KEY::value, tab separated) as a dict."""
    return dict(field.split("::", 1) for field in line.rstrip("\n").split("\t") if "::" in field)


class Nagios:
    """A private Nagios 4 daemon; objects from *cfg_files* (loaded as is) and *objects*."""

    def __init__(self, cfg_files=(), objects="", dir=None, interval_length=10):
        self.cfg_files = [os.path.abspath(f) for f in cfg_files]
        self.objects = objects
        self.interval_length = interval_length
        self.dir = dir or tempfile.mkdtemp(prefix="cmr-nagios-")
        self.pid = None
        self._set_paths()

    def _set_paths(self):
        p = lambda *parts: os.path.join(self.dir, *parts)  # noqa: E731
        self.main_cfg, self.resource_cfg = p("nagios.cfg"), p("resource.cfg")
        self.templates_cfg, self.objects_cfg = p("templates.cfg"), p("objects.cfg")
        self.status_file, self.perfdata_file = p("status.dat"), p("service-perfdata")
        self.log_file, self.lock_file = p("nagios.log"), p("nagios.pid")
        self.command_file, self.query_socket = p("rw", "nagios.cmd"), p("rw", "nagios.qh")
        self.check_result_path, self.temp_path = p("checkresults"), p("tmp")

    # ------------------------------------------------------------- config

    def main_config(self):
        """The text of the private nagios.cfg."""
        settings = [
            ("log_file", self.log_file),
            *[("cfg_file", f) for f in (self.templates_cfg, *self.cfg_files, self.objects_cfg)],
            ("resource_file", self.resource_cfg),
            ("object_cache_file", os.path.join(self.dir, "objects.cache")),
            ("precached_object_file", os.path.join(self.dir, "objects.precache")),
            ("status_file", self.status_file), ("status_update_interval", 1),
            ("temp_file", os.path.join(self.temp_path, "nagios.tmp")),
            ("temp_path", self.temp_path),
            ("lock_file", self.lock_file),
            ("command_file", self.command_file), ("check_external_commands", 1),
            ("query_socket", self.query_socket),
            ("check_result_path", self.check_result_path), ("check_result_reaper_frequency", 1),
            ("nagios_user", USER), ("nagios_group", USER),
            ("interval_length", self.interval_length),
            ("service_inter_check_delay_method", "n"), ("host_inter_check_delay_method", "n"),
            ("execute_service_checks", 1), ("execute_host_checks", 0),
            ("check_workers", 2), ("service_check_timeout", 60),
            ("illegal_macro_output_chars", "`~$&|'\"<>"),
            ("enable_notifications", 0), ("enable_event_handlers", 0),
            ("enable_flap_detection", 0), ("check_for_updates", 0),
            ("retain_state_information", 0), ("use_syslog", 0),
            ("log_rotation_method", "n"), ("log_initial_states", 1),
            ("process_performance_data", 1),
            ("service_perfdata_file", self.perfdata_file),
            ("service_perfdata_file_template", PERFDATA_TEMPLATE),
            ("service_perfdata_file_mode", "a"),
            ("service_perfdata_file_processing_interval", 0),
        ]
        return "".join("%s=%s\n" % kv for kv in settings)

    def write_config(self):
        """The directory, owned by nagios, with every config file in it."""
        nagios = pwd.getpwnam(USER)
        for sub in ("", "rw", "checkresults", "tmp"):
            path = os.path.join(self.dir, sub)
            os.makedirs(path, exist_ok=True)
            os.chmod(path, 0o755)
            os.chown(path, nagios.pw_uid, nagios.pw_gid)
        files = {self.main_cfg: self.main_config(),
                 self.resource_cfg: "$USER1$=%s\n" % PLUGIN_DIR,
                 self.templates_cfg: TEMPLATES,
                 self.objects_cfg: self.objects}
        for path, text in files.items():
            with open(path, "w") as fh:
                fh.write(text)
            os.chmod(path, 0o644)

    def verify(self):
        """`nagios4 -v` on the private config; its output, NagiosError if it fails."""
        res = subprocess.run([NAGIOS, "-v", self.main_cfg], capture_output=True, text=True,
                             stdin=subprocess.DEVNULL, env=daemon.clean_env(), timeout=60)
        if res.returncode != 0:
            raise NagiosError("nagios4 -v %s failed (exit %s):\n%s" % (
                self.main_cfg, res.returncode, res.stdout[-4000:] + res.stderr[-2000:]))
        return res.stdout

    # ---------------------------------------------------------- start/stop

    def start(self, timeout=30.0):
        """Write and verify the config, start `nagios4 -d`; wait until it takes commands."""
        self.write_config()
        self.verify()

        def ready():
            return os.path.exists(self.command_file) and os.path.exists(self.status_file)

        self.pid = daemon.start([NAGIOS, "-d", self.main_cfg], self.lock_file, ready=ready,
                                env=daemon.clean_env(), log=self.log_file, timeout=timeout)
        return self

    def stop(self, keep=False):
        """Stop the daemon (its workers and checks too); remove the directory unless *keep*."""
        daemon.stop(self.pid or _read_pid(self.lock_file))
        self.pid = None
        if not keep:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    def logs(self, lines=40):
        return "==> %s <==\n%s" % (self.log_file, _tail(self.log_file, lines))

    # ------------------------------------------------------------ commands

    def command(self, name, *args):
        """Send an external command through the command file."""
        line = "[%d] %s\n" % (time.time(), ";".join([name, *map(str, args)]))
        try:
            fd = os.open(self.command_file, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            raise NagiosError("cannot open command file %s: %s" % (self.command_file, exc)) from exc
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)

    def force_service_check(self, host, service):
        """Run the service's check now, whatever its schedule."""
        self.command("SCHEDULE_FORCED_SVC_CHECK", host, service, int(time.time()))

    # -------------------------------------------------------------- status

    def status(self):
        """status.dat parsed (see parse_status); [] before it exists."""
        try:
            with open(self.status_file, errors="replace") as fh:
                return parse_status(fh.read())
        except FileNotFoundError:
            return []

    def service(self, host, service):
        """The servicestatus fields of one service, or None."""
        for kind, fields in self.status():
            if kind == "servicestatus" and fields.get("host_name") == host \
                    and fields.get("service_description") == service:
                return fields
        return None

    def wait_service(self, host, service, predicate, timeout=30.0):
        """Poll status.dat until predicate(fields) holds; the fields, NagiosError if not."""
        def check():
            fields = self.service(host, service)
            return fields if fields and predicate(fields) else None
        fields = daemon.wait_until(check, timeout, interval=0.2)
        if not fields:
            raise NagiosError("service %s/%s: not as expected within %ss; status: %r\n%s" % (
                host, service, timeout, self.service(host, service), self.logs(20)))
        return fields

    def perfdata(self):
        """The service perfdata file, one dict per line."""
        try:
            with open(self.perfdata_file, errors="replace") as fh:
                return [parse_perfdata_line(line) for line in fh if line.strip()]
        except FileNotFoundError:
            return []

