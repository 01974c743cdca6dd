"""contrib/nagios/mail_roundtrip.cfg in a real Nagios 4, checking the mail lab.

A private Nagios 4 (tests/lab/nagios.py) loads the contrib file as is and a
lab host with two services that use its command: a plain one and one with
-v (multi-line output, perfdata on the last line).  The plugin is the one
README's install section put in $USER1$ (the `installed_plugin` fixture), run
by Nagios as user nagios with the installed password file and the state in
/var/lib/check_mail_roundtrip, for a mailbox of this module's own.  The first
check of each service sends the first probe; once both probes are back a
forced check reports the round trip.  Asserted: what status.dat and the
service perfdata file hold after each round.
"""

import imaplib
import os
import pwd
import re
import secrets
import ssl
import time

import pytest

from tests.lab import LabError, daemon, nagios as nagios_lab, plugin

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONTRIB = os.path.join(ROOT, "contrib", "nagios", "mail_roundtrip.cfg")
HOST = "lab"
PLAIN, VERBOSE = "Mail round trip", "Mail round trip verbose"
SERVICES = (PLAIN, VERBOSE)
USER = "nagios@lab.test"
LABELS = {"rtt": "s", "oldest_pending": "s", "pending": "", "lost": "", "junk": ""}
# label=value[unit];warn;crit;min;max, the value a plain decimal (never an exponent)
PERF_ITEM = re.compile(r"^([a-z_]+)=(\d+(?:\.\d+)?)(s?)((?:;[^;\s]*){0,4})$")


def lab_objects(lab):
    """The lab host and its two services, using contrib's command."""
    extra = "--smtp-port %d --imap-port %d --ca-file %s" % (
        lab.ports["smtp"], lab.ports["imaps"], lab.ca_file)
    args = {PLAIN: extra, VERBOSE: extra + " --name nagios-verbose -v"}
    services = "".join("""
define service {
    use                     generic-service
    host_name               %s
    service_description     %s
    check_command           check_mail_roundtrip!%s!120!600!%s
    active_checks_enabled   1
    check_interval          60
    max_check_attempts      1
}
""" % (HOST, name, USER, args[name]) for name in SERVICES)
    return """define host {
    use         linux-server
    host_name   %s
    address     %s
}
%s""" % (HOST, lab.host, services)


def wait_until_login_works(lab, user, password, timeout=10.0):
    """Dovecot may take a second to see a user add_user() just added; wait for it."""
    context = ssl.create_default_context(cafile=lab.ca_file)

    def login():
        try:
            with imaplib.IMAP4_SSL(lab.host, lab.ports["imaps"], ssl_context=context,
                                   timeout=5) as imap:
                imap.login(user, password)
            return True
        except (imaplib.IMAP4.error, OSError):
            return False

    if not daemon.wait_until(login, timeout, interval=0.25):
        pytest.fail("lab user %s cannot log in %ss after add_user()" % (user, timeout),
                    pytrace=False)


def brief(status):
    """The fields of a servicestatus that say what happened (for assertion messages)."""
    return {k: status.get(k) for k in ("service_description", "current_state", "plugin_output",
                                       "long_plugin_output", "performance_data", "last_check")}


def perf_items(perfdata):
    """{label: (value, unit)} of a perfdata string; AssertionError on an item not ours."""
    items = {}
    for item in perfdata.split():
        m = PERF_ITEM.match(item)
        assert m, "perfdata item %r in %r" % (item, perfdata)
        items[m.group(1)] = (m.group(2), m.group(3))
    return items


def assert_our_perfdata(perfdata, labels=LABELS):
    items = perf_items(perfdata)
    for label in labels:
        assert label in items, (label, perfdata)
        assert items[label][1] == labels[label], (label, perfdata)


@pytest.fixture(scope="module")
def nagios(lab_session, installed_plugin):
    """The private Nagios with contrib's config and the lab's services, running."""
    try:
        nagios_lab.install()
    except LabError as exc:
        pytest.fail("nagios4 cannot be installed: %s" % exc, pytrace=False)
    password = secrets.token_urlsafe(12)
    lab_session.add_user(USER, password)
    wait_until_login_works(lab_session, USER, password)
    instance = nagios_lab.Nagios(cfg_files=[CONTRIB], objects=lab_objects(lab_session))
    with plugin.new_state_files_removed(), plugin.password_in_file(password):
        try:
            instance.start()
        except LabError as exc:
            instance.stop()
            pytest.fail("private Nagios did not start: %s" % exc, pytrace=False)
        try:
            yield instance
        finally:
            instance.stop()


def wait_checked(nagios, after=0):
    """Both services' status once each has a check result newer than *after*."""
    return {name: nagios.wait_service(HOST, name, lambda s: int(s["last_check"]) > after,
                                      timeout=40)
            for name in SERVICES}


@pytest.fixture(scope="module")
def rounds(nagios, lab_session):
    """Status of both services after the start-up checks, then after a forced round."""
    first = wait_checked(nagios)
    lab_session.wait_for(USER, 2, timeout=20)  # both first probes are back
    last = max(int(s["last_check"]) for s in first.values())
    daemon.wait_until(lambda: time.time() >= last + 1.0, 2)  # a newer last_check, surely
    for name in SERVICES:
        nagios.force_service_check(HOST, name)
    return first, wait_checked(nagios, after=last)


def test_config_loads_contrib_as_is(nagios):
    out = nagios.verify()
    assert re.search(r"Total Warnings:\s+0\b", out), out
    assert re.search(r"Total Errors:\s+0\b", out), out
    example = nagios.service("mail.example.org", "Mail round trip")
    assert example is not None, "contrib's example service is not in status.dat"
    # the example is loaded, never run: nothing is sent to mail.example.org
    assert example["has_been_checked"] == "0", example


def test_first_check_sends_the_first_probe(rounds):
    first, _ = rounds
    for _name, status in first.items():
        assert status["current_state"] == "0", brief(status)
        assert status["plugin_output"].startswith(
            "MAIL_ROUNDTRIP OK - first probe sent, 1 in flight"), brief(status)
    assert_our_perfdata(first[PLAIN]["performance_data"],
                        {k: v for k, v in LABELS.items() if k != "rtt"})


def assert_round_trip_ok(status):
    """OK with a round trip: the status line alone in plugin_output, perfdata parsed out."""
    assert status["current_state"] == "0", brief(status)
    assert status["plugin_output"].startswith("MAIL_ROUNDTRIP OK - round trip "), brief(status)
    assert "|" not in status["plugin_output"] + status["long_plugin_output"], brief(status)
    assert_our_perfdata(status["performance_data"])


def test_forced_check_reports_the_round_trip(rounds):
    _, second = rounds
    assert_round_trip_ok(second[PLAIN])
    assert second[PLAIN]["long_plugin_output"] == "", brief(second[PLAIN])


def test_verbose_output_reaches_nagios_with_its_perfdata(rounds):
    _, second = rounds
    status = second[VERBOSE]
    assert_round_trip_ok(status)
    # status.dat keeps the lines of the long output joined by a literal \n
    assert "\\n" in status["long_plugin_output"], brief(status)
    # Nagios ran it as user nagios: the state file it names is nagios'
    state_file = re.search(r"state file (\S+\.json)", status["long_plugin_output"]).group(1)
    assert os.path.dirname(state_file) == plugin.STATE_DIR, state_file
    assert pwd.getpwuid(os.stat(state_file).st_uid).pw_name == "nagios", state_file


def test_service_perfdata_file_has_our_labels(nagios, rounds):
    lines = [d for d in nagios.perfdata() if d.get("HOSTNAME") == HOST]
    assert {d["SERVICEDESC"] for d in lines} == set(SERVICES), lines
    for name in SERVICES:
        mine = [d for d in lines if d["SERVICEDESC"] == name]
        assert len(mine) == 2, mine
        for d in mine:
            assert d["SERVICESTATE"] == "OK", d
            assert d["SERVICEOUTPUT"].startswith("MAIL_ROUNDTRIP OK - "), d
        assert_our_perfdata(mine[-1]["SERVICEPERFDATA"])
    verbose_last = [d for d in lines if d["SERVICEDESC"] == VERBOSE][-1]
    assert verbose_last["LONGSERVICEOUTPUT"], verbose_last
