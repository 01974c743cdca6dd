"""Failover in a real Icinga 2 HA zone: no false loss (docs/explanation/distributed.md).

Two private icinga2 endpoints on loopback (tests/lab/icinga_cluster.py,
certificates made with ``icinga2 pki``) load contrib's CheckCommand and one
service with ``zone = "master"``: whichever endpoint is up runs it, as the
installed plugin, as nagios, with a state directory of its own
(``<base>/<NodeName>``), ``--node NodeName``, and the secret both share.
The endpoint that runs the service is stopped, the other takes over, the
first comes back and runs it again (with both endpoints up, Icinga gives the
service to the same one), twice.  The first time the one left alone takes
over only after its first 30 s (Icinga's cold start), so the stopped one is
away for longer than --lost-after.  Icinga's own records then show only OK
results, and the books of the two state directories balance with nothing
lost.
"""

import json
import os
import re
import secrets
import shutil
import time

import pytest

from check_mail_roundtrip.state import file_stem
from tests.lab import daemon
from tests.lab.icinga import ensure_readable, literal, private_dir, string
from tests.lab.icinga_cluster import IcingaCluster
from tests.test_icinga import CHECK_COMMAND_FILE, write_private

HOST = "mail-lab"
SERVICE = "mail-roundtrip-ha"
MAILBOX = "ha@lab.test"
PROFILE = "ha-zone"
LOST_AFTER = 12
CYCLES = 2
RUNS_PER_PHASE = 3
PHASE_TIMEOUT = 90.0    # Icinga hands the service over within its 10 s authority timer (30 s after a start)
# "Running command '<plugin>' ...": the runs of the plugin an endpoint made; its exit codes
RUNNING = re.compile(r"notice/Process: Running command '([^']*)'")
EXITED = re.compile(r"notice/Process: PID \d+ \('([^']*)'.*\) terminated with exit code (\d+)")
STATE_CHANGE = re.compile(r"hard state change from (\w+) to (\w+)")


def objects(lab, plugin_dir, password, secret_file, state_base):
    variables = {
        "from": MAILBOX, "smtp_port": lab.ports["smtp"], "imap_port": lab.ports["imaps"],
        "ca_file": lab.ca_file, "imap_password": password, "secret_file": secret_file, "name": PROFILE,
        "warning": 6, "critical": 8, "lost_after": LOST_AFTER, "timeout": 10,
    }
    lines = ["    vars.mail_roundtrip_%s = %s" % (k, literal(v)) for k, v in variables.items()]
    # each endpoint its own state directory and node name: NodeName differs between them
    lines += ['    vars.mail_roundtrip_state_dir = %s + "/" + NodeName' % string(state_base),
              "    vars.mail_roundtrip_node = NodeName"]
    return """\
object Host %s {
    zone = "master"
    check_command = "dummy"
    address = %s
}
object Service %s {
    zone = "master"
    host_name = %s
    check_command = "mail_roundtrip"
    check_interval = 1s
    retry_interval = 1s
    max_check_attempts = 1
    check_timeout = 20s
%s
}
""" % (string(HOST), string(lab.host), string(SERVICE), string(HOST), "\n".join(lines))


def runs(node, plugin):
    """Exit codes of the plugin runs *node* has logged so far."""
    return [int(m.group(2)) for m in map(EXITED.search, node.log_lines()) if m and m.group(1) == plugin]


def wait_runs(node, plugin, n, others=()):
    """Wait until *node* has made *n* more runs of the plugin than now."""
    start = len(runs(node, plugin))
    daemon.wait_until(lambda: len(runs(node, plugin)) >= start + n or not node.running, PHASE_TIMEOUT, interval=0.5)
    assert len(runs(node, plugin)) >= start + n, "%s ran the check %d times in %ss\n%s" % (
        node.name, len(runs(node, plugin)) - start, PHASE_TIMEOUT, node.logs())


def books(state_base):
    totals = {"sent": 0, "returned": 0, "lost": 0, "pending": 0}
    for node in os.listdir(state_base):
        path = os.path.join(state_base, node, file_stem(PROFILE) + ".json")
        if os.path.exists(path):
            with open(path) as f:
                st = json.load(f)
            for k in ("sent", "returned", "lost"):
                totals[k] += st["totals"][k]
            totals["pending"] += len(st["pending"])
    return totals


@pytest.mark.lab
def test_failover_back_and_forth_in_an_ha_zone_shows_no_false_loss(lab_session, installed_plugin):
    plugin_dir = os.path.dirname(installed_plugin)
    ensure_readable(lab_session.ca_file)
    password = secrets.token_urlsafe(12)
    if MAILBOX not in lab_session.users:
        lab_session.add_user(MAILBOX, password)
    else:
        password = lab_session.users[MAILBOX]
    home = private_dir("cmr-icinga-ha-")
    try:
        secret_file = os.path.join(home, "secret")
        write_private(secret_file, secrets.token_hex(32) + "\n")
        state_base = os.path.join(home, "state")
        os.mkdir(state_base)
        os.chown(state_base, *[int(x) for x in _nagios_ids()])
        cluster = IcingaCluster(objects(lab_session, plugin_dir, password, secret_file, state_base), plugin_dir,
                                includes=[CHECK_COMMAND_FILE])
        try:
            with cluster:
                first, second = cluster.nodes
                daemon.wait_until(lambda: runs(first, installed_plugin) or runs(second, installed_plugin),
                                  PHASE_TIMEOUT, interval=0.5)
                # the endpoint Icinga gives the service to while both are up
                owner = first if len(runs(first, installed_plugin)) >= len(runs(second, installed_plugin)) else second
                standby = second if owner is first else first
                away = []
                for _cycle in range(CYCLES):
                    wait_runs(owner, installed_plugin, RUNS_PER_PHASE)
                    owner.end()             # the endpoint running the check goes away ...
                    t_end = time.monotonic()
                    wait_runs(standby, installed_plugin, RUNS_PER_PHASE)  # ... the standby takes over
                    owner.start()           # ... and it comes back: it runs the check again
                    away.append(time.monotonic() - t_end)
                wait_runs(owner, installed_plugin, RUNS_PER_PHASE)
                codes = [c for node in cluster.nodes for c in runs(node, installed_plugin)]
                changes = [m.groups() for node in cluster.nodes for m in map(STATE_CHANGE.search, node.log_lines())
                           if m and ("'%s!%s'" % (HOST, SERVICE)) in m.string]
                ran = {node.name: len(runs(node, installed_plugin)) for node in cluster.nodes}
        finally:
            cluster.stop()
        assert ran[owner.name] >= RUNS_PER_PHASE * (CYCLES + 1) and ran[standby.name] >= RUNS_PER_PHASE * CYCLES, ran
        assert away[0] > LOST_AFTER, away   # its probes in flight were older than --lost-after when it came back
        assert codes and set(codes) == {0}, (codes, ran)           # every result Icinga got was OK
        assert all(new == "OK" for _old, new in changes), changes
        t = books(state_base)
        assert t["lost"] == 0 and t["sent"] == t["returned"] + t["pending"] + t["lost"], t
        assert t["returned"] >= sum(ran.values()) // 2, (t, ran)   # round trips, not first probes only
    finally:
        shutil.rmtree(home, ignore_errors=True)  # it holds the secret


def _nagios_ids():
    import pwd
    pw = pwd.getpwnam("nagios")
    return pw.pw_uid, pw.pw_gid
