"""--wait: the probe just sent is measured in the same run.

Against the lab: the delay fault holds every mail for some seconds (the hold
fault until it is released, for a probe that must come after the wait); its IMAP
on 127.0.0.3 (lab.PLAIN_HOST) does not offer IDLE; a CutRelay in front of
the plain IMAP port cuts the session when the check starts to IDLE.
"""

import re
import threading
import time

from tests import faultservers as fs
from tests.checkrun import Checker
from tests.lab.common import PLAIN_HOST

MONITOR = "monitor@lab.test"
NUM = r"\d+\.\d+"
PERF_BACK = (r"junk=0;;;0 lost=0;;;0 oldest_pending=0\.0s;120;600;0 pending=0;;;0 rtt=(%s)s;120;600;0 "
             r"since_last_success=%ss;;;0" % (NUM, NUM))


def _rtt(r):
    m = re.fullmatch(r"MAIL_ROUNDTRIP OK - round trip (%s)s, 0 in flight, last success 0s ago \| %s" % (NUM, PERF_BACK),
                     r.full_line)
    assert m and m.group(1) == m.group(2), r
    return float(m.group(1))


def test_without_delay_the_first_run_reports_its_own_round_trip_and_ends_early(lab, tmp_path):
    check = Checker(lab, tmp_path)
    r = check("--wait", "15", "-v")
    assert r.rc == 0 and _rtt(r) < 2, r
    assert r.seconds < 10, r.seconds
    assert re.search(r"^probe (\w+) back after waiting %ss \(" % NUM, r.stdout, re.M), r.stdout
    assert not [m for m in lab.messages(MONITOR) if "MRTP1." in m["subject"]]  # collected and removed


def test_a_delay_shorter_than_the_wait_is_measured_with_idle(lab, tmp_path):
    check = Checker(lab, tmp_path)
    lab.delay(3)
    r = check("--wait", "12", "-t", "30", "-vvv")
    assert r.rc == 0 and 3 <= _rtt(r) < 6, r
    assert r.seconds < 11, r.seconds
    assert re.search(r"^probe \w+ back after waiting %ss \(IMAP IDLE\)$" % NUM, r.stdout, re.M), r.stdout
    assert re.search(r"^IMAP C: (\S+) IDLE\n(?:IMAP S: .*\n)*IMAP C: DONE\n(?:IMAP S: .*\n)*IMAP S: \1 OK ",
                     r.stdout, re.M), r.stdout
    assert "IMAP C: " in r.stdout and not re.search(r"^IMAP C: \S+ NOOP$", r.stdout, re.M)


def test_a_delay_longer_than_the_wait_leaves_the_probe_pending_for_the_next_run(lab, tmp_path):
    """The IDLE ends with DONE when the wait is over, the probe still in flight, as without --wait
    (that the next run counts it is the same with or without --wait: tests/test_mem_wait.py)."""
    check = Checker(lab, tmp_path)
    lab.hold()   # the probe comes later than the wait: not before the test is over
    r = check("--wait", "2", "-t", "20", "-vvv")
    assert r.rc == 0 and re.fullmatch(
        r"MAIL_ROUNDTRIP OK - first probe sent, oldest in flight %ss, 1 in flight \| junk=0;;;0 lost=0;;;0 "
        r"oldest_pending=(%s)s;120;600;0 pending=1;;;0" % (NUM, NUM), r.full_line), r
    assert 2 <= r.seconds < 8, r.seconds
    probe = re.search(r"^probe (\w+) not back after waiting (%s)s \(IMAP IDLE\)$" % NUM, r.stdout, re.M)
    assert probe and 1.5 <= float(probe.group(2)) < 3, r.stdout
    assert re.search(r"^IMAP C: (\S+) IDLE\n(?:IMAP S: .*\n)*IMAP C: DONE\n(?:IMAP S: .*\n)*IMAP S: \1 OK ",
                     r.stdout, re.M), r.stdout


def test_a_server_without_idle_is_polled_and_no_idle_forces_polling(lab, tmp_path):
    for host, why in ((PLAIN_HOST, "the server does not offer IDLE"), ("127.0.0.1", "--no-idle")):
        check = Checker(lab, tmp_path / host, MONITOR, None, "imaps", "smtp", "--imap-host", host)
        lab.delay(2)
        extra = () if host == PLAIN_HOST else ("--no-idle",)
        r = check("--wait", "10", "-vvv", *extra)
        assert r.rc == 0 and 2 <= _rtt(r) < 5, r
        assert re.search(r"^probe \w+ back after waiting %ss \(a NOOP and a search every 1s; %s\)$" % (NUM, why),
                         r.stdout, re.M), r.stdout
        assert not re.search(r"^IMAP C: \S+ IDLE$", r.stdout, re.M)
        noops = re.findall(r"^IMAP C: \S+ NOOP$", r.stdout, re.M)
        assert 1 <= len(noops) <= 5, noops  # about once a second
        lab.delay(0)


def test_pop3_waits_with_a_new_session_every_two_seconds(lab, tmp_path):
    check = Checker(lab, tmp_path, MONITOR, None, "imaps", "smtp", "--collect", "pop3",
                    "--pop3-port", str(lab.ports["pop3s"]))
    check.env["CHECK_MAIL_ROUNDTRIP_POP3_PASSWORD"] = lab.users[MONITOR]
    lab.delay(3)
    r = check("--wait", "12", "-v")
    assert r.rc == 0, r
    # the probe is seen by the next session after it came (up to 2s later): the last success was 0-2s ago
    m = re.fullmatch(r"MAIL_ROUNDTRIP OK - round trip (%s)s, 0 in flight, last success [0-2]s ago \| lost=0;;;0 "
                     r"oldest_pending=0\.0s;120;600;0 pending=0;;;0 rtt=(%s)s;120;600;0 since_last_success=(%s)s;;;0"
                     % (NUM, NUM, NUM), r.full_line)
    assert m and 3 <= float(m.group(1)) < 7, r  # the Received date has whole seconds
    assert float(m.group(3)) < 3, r
    assert re.search(r"^probe \w+ back after waiting %ss \(a new POP3 session every 2s\)$" % NUM, r.stdout, re.M)


def test_a_connection_cut_during_the_wait_ends_it_quietly(lab, tmp_path):
    check = Checker(lab, tmp_path, MONITOR, None, "imaps", "smtp", "--name", "cut-wait")
    lab.hold()   # the probe comes after the cut
    cut = fs.CutRelay(lab.ports["imap"], r"^\S+ IDLE\r?$", how="reset")
    with fs.FaultServer(cut, max_connections=3) as relay:
        r = check("--wait", "10", "-v", "--imap-host", "127.0.0.1", "--imap-port", str(relay.port),
                  "--imap-tls", "none")
    assert len(cut.cuts) == 1, (cut.cuts, relay.received)
    assert r.rc == 0 and r.line.startswith("MAIL_ROUNDTRIP OK - first probe sent, "), r
    assert "pending=1;;;0" in r.full_line
    assert re.search(r"^waiting for probe (\w+) ended after %ss: IMAP wait failed: .*\(left for the next run\)$"
                     % NUM, r.stdout, re.M), r.stdout
    lab.release()
    lab.wait_for(MONITOR, 1, timeout=20)
    r = check("-v")
    assert r.rc == 0 and r.line.startswith("MAIL_ROUNDTRIP OK - round trip "), r


def test_the_server_ending_the_session_during_idle_ends_the_wait_quietly(lab, tmp_path):
    check = Checker(lab, tmp_path)
    lab.delay(5)

    def kick():
        time.sleep(2.5)
        lab._doveadm("kick", MONITOR, check=False)

    kicker = threading.Thread(target=kick, daemon=True)
    kicker.start()
    r = check("--wait", "10", "-v")
    kicker.join(10)
    assert r.rc == 0 and r.line.startswith("MAIL_ROUNDTRIP OK - first probe sent, "), r
    assert r.seconds < 7, r.seconds
    assert re.search(r"^waiting for probe \w+ ended after %ss: IMAP wait failed: " % NUM, r.stdout, re.M), r.stdout


def test_idle_refused_ends_the_wait_quietly(lab, tmp_path):
    script = fs.IMAPScript(folders=["INBOX"], capabilities="IDLE UIDPLUS",
                           replies={"IDLE": "{tag} NO [LIMIT] too many idling sessions"})
    with fs.FaultServer(script, max_connections=3) as srv:
        r = Checker(lab, tmp_path)("--wait", "5", "-v", "--imap-host", "127.0.0.1", "--imap-port", str(srv.port),
                                   "--imap-tls", "none", "--no-junk")
    assert r.rc == 0 and r.line.startswith("MAIL_ROUNDTRIP OK - first probe sent, 1 in flight"), r
    assert re.search(r"^waiting for probe \w+ ended after %ss: IMAP wait failed: IDLE refused: \[LIMIT\] too many "
                     r"idling sessions \(left for the next run\)$" % NUM, r.stdout, re.M), r.stdout
    assert r.seconds < 4, r.seconds


def test_a_wait_that_does_not_fit_the_timeout_is_a_usage_error(lab, tmp_path):
    r = Checker(lab, tmp_path)("--wait", "25")
    assert r.rc == 3 and r.line == (
        "MAIL_ROUNDTRIP UNKNOWN - usage error: --wait 25s leaves no room in -t 30s for the rest of the run: "
        "-t must be at least --wait + 10s (here 35s) (see --help)"), r
    r = Checker(lab, tmp_path)("--wait", "25", "-t", "35")
    assert r.rc == 0, r
    r = Checker(lab, tmp_path)("--wait=-1")
    assert r.rc == 3 and "--wait: must be 0 or more seconds: '-1'" in r.line, r
