"""Icinga 2 runs the installed check with contrib's CheckCommand; its perfdata lands in Graphite.

A private Icinga 2 (tests/lab/icinga.py) loads contrib/icinga2/mail_roundtrip.conf
as it is and checks mailboxes of the session's mail lab every 2 seconds, as
user nagios, with the plugin installed as README's "Install on a monitoring
server" says (the `installed_plugin` fixture).  Its GraphiteWriter sends to a
private carbon-cache (tests/lab/carbon.py), whose whisper files are read back.
Two services: "mail-roundtrip" gets its settings from service variables (the
IMAP password through the CheckCommand's env), "mail-roundtrip-ini" gets all
of them from an --extra-opts file.  Icinga's record of a state is the hard
state change line its log writes.
"""

import os
import re
import secrets
import shutil
from types import SimpleNamespace

import pytest

from check_mail_roundtrip.cli import parser
from tests.lab.carbon import Carbon
from tests.lab.icinga import Icinga, ensure_readable, install as icinga_install, literal, private_dir, string

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONTRIB = os.path.join(ROOT, "contrib", "icinga2")
CHECK_COMMAND_FILE = os.path.join(CONTRIB, "mail_roundtrip.conf")
SERVICES_FILE = os.path.join(CONTRIB, "services.conf")
MULTI_LOCATION_FILE = os.path.join(CONTRIB, "multi-location.conf")
HOST, COMMAND = "mail-lab", "mail_roundtrip"
SERVICE, INI_SERVICE = "mail-roundtrip", "mail-roundtrip-ini"
MAILBOXES = {SERVICE: "icinga@lab.test", INI_SERVICE: "icinga-ini@lab.test"}
WARNING, CRITICAL, LOST_AFTER, TIMEOUT = 3, 30, 60, 10
# The series each perfdata label makes: thresholds only where the plugin prints them.
SERIES = {
    "rtt": ("value", "warn", "crit", "min"),
    "oldest_pending": ("value", "warn", "crit", "min"),
    "pending": ("value", "min"),
    "lost": ("value", "min"),
    "since_last_success": ("value", "min"),
    "junk": ("value", "min"),
}
# Icinga's notice about each process it runs: the argv, quoted.
RUNNING = re.compile(r"notice/Process: Running command (.*): PID \d+$")
# How Icinga logs perfdata it cannot use (warnings, and debug lines about units and ranges),
# and any warning of the parts that handle perfdata.
PERFDATA_TROUBLE = re.compile(r"invalid perfdata|invalid performance data|unsupported perfdata",
                              re.I)
WARNING_LINE = re.compile(r"\] (warning|critical)/")
PERF_COMPONENT = re.compile(r"perf|GraphiteWriter|PluginUtility", re.I)


def checkable(service):
    return "%s!%s" % (HOST, service)


def options(lab, service, password, state_dir):
    """The plugin's options for the service's own mailbox in the lab, by long name."""
    return {"from": MAILBOXES[service], "smtp-port": lab.ports["smtp"],
            "imap-port": lab.ports["imaps"], "ca-file": lab.ca_file, "imap-password": password,
            "state-dir": state_dir, "warning": WARNING, "critical": CRITICAL,
            "lost-after": LOST_AFTER, "timeout": TIMEOUT}


def service_object(name, variables):
    """A service of the lab host checked every 2 s, hard at once, with these custom vars."""
    lines = ["    vars.mail_roundtrip_%s = %s" % (k.replace("-", "_"), literal(v))
             for k, v in variables.items()]
    return """\
object Service %s {
    host_name = %s
    check_command = %s
    check_interval = 2s
    retry_interval = 2s
    max_check_attempts = 1
    check_timeout = 30s
%s
}
""" % (string(name), string(HOST), string(COMMAND), "\n".join(lines))


def host_object(lab):
    """The lab as a host, by address: -H comes from the CheckCommand's $check_address$."""
    return 'object Host %s {\n    check_command = "dummy"\n    address = %s\n}\n' % (
        string(HOST), string(lab.host))


def write_private(path, text):
    """A file only nagios can read (owner nagios, mode 0600)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with open(fd, "w") as fh:
        fh.write(text)
    shutil.chown(path, "nagios", "nagios")


def configuration(lab, home):
    """(objects, passwords, ini file): the host and both services, each with a mailbox.

    "mail-roundtrip" has every option as a custom var (the password goes to the
    env) and -v, so its perfdata comes on the last line of a long output;
    "mail-roundtrip-ini" has them all in an ini file given by --extra-opts.
    """
    passwords, opts = {}, {}
    for service, mailbox in MAILBOXES.items():
        passwords[service] = secrets.token_urlsafe(12)
        lab.add_user(mailbox, passwords[service])
        opts[service] = options(lab, service, passwords[service], os.path.join(home, service))
    ini_file = os.path.join(home, "plugins.ini")
    write_private(ini_file, "[check_mail_roundtrip]\n"
                  + "".join("%s = %s\n" % item for item in opts[INI_SERVICE].items()))
    objects = (host_object(lab) + service_object(SERVICE, dict(opts[SERVICE], verbose=True))
               + service_object(INI_SERVICE, {"extra_opts": "@" + ini_file}))
    return objects, passwords, ini_file


@pytest.fixture(scope="module")
def carbon():
    with Carbon() as c:
        yield c


@pytest.fixture(scope="module")
def monitoring(lab_session, installed_plugin, carbon):
    """.icinga checking two mailboxes of the session lab; .passwords, .ini_file, .plugin."""
    plugin_dir = os.path.dirname(installed_plugin)
    assert installed_plugin == os.path.join(plugin_dir, "check_mail_roundtrip")
    ensure_readable(lab_session.ca_file)
    home = private_dir("cmr-icinga-checks-")  # state directories and the ini file
    try:
        objects, passwords, ini_file = configuration(lab_session, home)
        with Icinga(objects, plugin_dir, graphite=(carbon.host, carbon.port),
                    includes=[CHECK_COMMAND_FILE]) as icinga:
            yield SimpleNamespace(icinga=icinga, passwords=passwords, ini_file=ini_file,
                                  plugin=installed_plugin)
    finally:
        lab_session.release()  # whatever a test left held
        shutil.rmtree(home, ignore_errors=True)


def perfdata_prefix(service):
    """Where the GraphiteWriter puts the perfdata of *service* (…perfdata.<label>.<kind>)."""
    return "icinga2.%s.services.%s.%s.perfdata." % (HOST, service, COMMAND)


def _plugin_runs(icinga, plugin):
    """The quoted argv of every run of *plugin* that Icinga logged."""
    runs = (RUNNING.search(line) for line in icinga.log_lines())
    return [m.group(1) for m in runs if m and m.group(1).startswith("'%s' " % plugin)]


@pytest.mark.parametrize("service", [SERVICE, INI_SERVICE])
def test_perfdata_reaches_graphite(monitoring, carbon, service):
    prefix = perfdata_prefix(service)
    wanted = [prefix + "%s.%s" % (label, kind) for label, kinds in SERIES.items() for kind in kinds]
    data = carbon.wait_for(wanted, timeout=60)
    assert carbon.metrics(prefix) == sorted(wanted)  # no .max, no thresholds the plugin left empty

    def points(label, kind):
        return [value for _t, value in data[prefix + "%s.%s" % (label, kind)]]

    for label in ("rtt", "oldest_pending"):
        assert set(points(label, "warn")) == {WARNING}
        assert set(points(label, "crit")) == {CRITICAL}
    for label in SERIES:
        assert set(points(label, "min")) == {0}
    assert all(0 <= v <= 10 for v in points("rtt", "value")), data
    assert all(0 <= v <= 10 for v in points("oldest_pending", "value")), data
    assert all(1 <= v <= 5 for v in points("pending", "value")), data
    assert set(points("lost", "value")) == {0}
    assert set(points("junk", "value")) == {0}
    assert all(0 <= v <= 60 for v in points("since_last_success", "value")), data


def test_stall_warns_and_recovery_is_ok(monitoring, lab_session):
    icinga = monitoring.icinga
    icinga.wait_for_state(checkable(SERVICE), "OK", timeout=30)
    try:
        mark = icinga.mark()
        lab_session.hold()
        changes = icinga.wait_for_state(checkable(SERVICE), "WARNING", after=mark, timeout=30)
        assert changes[0] == ("OK", "WARNING"), changes
    finally:
        mark = icinga.mark()
        lab_session.release()
    icinga.wait_for_state(checkable(SERVICE), "OK", after=mark, timeout=30)


def test_extra_opts_file_alone_configures_the_check(monitoring, lab_session):
    monitoring.icinga.wait_for_state(checkable(INI_SERVICE), "OK", timeout=30)
    runs = [r for r in _plugin_runs(monitoring.icinga, monitoring.plugin) if "--extra-opts" in r]
    expected = "'%s' '--extra-opts' '@%s' '-H' '%s'" % (monitoring.plugin, monitoring.ini_file,
                                                         lab_session.host)
    assert runs and set(runs) == {expected}, runs


def test_command_line_has_host_and_flag_but_no_password(monitoring, lab_session):
    runs = [r for r in _plugin_runs(monitoring.icinga, monitoring.plugin) if "--from" in r]
    assert runs and all("'-H' '%s'" % lab_session.host in r and "'-v'" in r.split(" ")
                        for r in runs), runs
    log = monitoring.icinga.log_text()
    assert not [service for service, pw in monitoring.passwords.items() if pw in log]


def test_log_has_no_perfdata_trouble(monitoring):
    lines = monitoring.icinga.log_lines()
    trouble = [ln for ln in lines if PERFDATA_TROUBLE.search(ln)
               or (WARNING_LINE.search(ln) and PERF_COMPONENT.search(ln))]
    assert not trouble, "\n".join(trouble[:20])


@pytest.mark.lab  # installs icinga2 when it is missing
def test_contrib_services_conf_is_valid():
    icinga_install()
    icinga = Icinga("", "/usr/lib/nagios/plugins", includes=[CHECK_COMMAND_FILE, SERVICES_FILE])
    try:
        out = icinga.validate()
    finally:
        icinga.stop()
    assert "Instantiated 1 Service." in out and "Instantiated 1 Host." in out, out


@pytest.mark.lab  # installs icinga2 when it is missing
def test_contrib_multi_location_conf_is_valid():
    icinga_install()
    icinga = Icinga("", "/usr/lib/nagios/plugins", includes=[CHECK_COMMAND_FILE, MULTI_LOCATION_FILE])
    try:
        out = icinga.validate("-DNodeName=master1.example.org")  # the master of the example
    finally:
        icinga.stop()
    assert "Instantiated 3 Services." in out and "Instantiated 3 Zones." in out, out


def test_check_command_has_every_option():
    with open(CHECK_COMMAND_FILE) as fh:
        keys = set(re.findall(r'^\s*"(-[^"]+)" = \{', fh.read(), re.M))
    options = [a.option_strings for a in parser()._actions
               if a.option_strings and a.dest not in ("help", "version")]
    assert [o for o in options if not keys & set(o)] == []
    assert keys <= {s for o in options for s in o}
