"""The relay lab: probes sent by the real check to mx1.lab.test, a second Postfix, reach the
lab's mailbox over two MTAs with the trace a postmaster would read: a Received line per hop
(TLS on the relay hop), a hold in mx1's queue as that hop's time."""

import email.utils
import re

from tests.checkrun import Checker

MONITOR = "monitor@lab.test"
FIRST_PROBE = ("MAIL_ROUNDTRIP OK - first probe sent, 1 in flight "
               "| junk=0;;;0 lost=0;;;0 oldest_pending=0.0s;120;600;0 pending=1;;;0")
ROUND_TRIP = (r"MAIL_ROUNDTRIP OK - round trip (\d+\.\d+)s, 1 in flight, last success \d+s ago "
              r"\| junk=0;;;0 lost=0;;;0 oldest_pending=0\.0s;120;600;0 pending=1;;;0 "
              r"rtt=\1s;120;600;0 since_last_success=\d+\.\d+s;;;0")
HOLD = 5


def through_mx1(relay_lab, lab, tmp_path):
    """The check for the monitor mailbox, sending to mx1 (STARTTLS) and collecting from the lab."""
    check = Checker(lab, tmp_path)
    check.args += ["--smtp-host", relay_lab.host, "--smtp-port", str(relay_lab.port),
                   "--smtp-helo", "probe.lab.test"]
    return check


def received(msg):
    """The Received fields of *msg*, unfolded, newest first."""
    return [" ".join(value.split()) for value in msg.get_all("Received")]


def stamp(line):
    """The date of a Received line (after its last ';'), as a POSIX time."""
    return email.utils.parsedate_to_datetime(line.rsplit(";", 1)[1]).timestamp()


def test_a_probe_through_mx1_has_a_received_line_per_hop_with_tls_on_the_relay_hop(relay_lab, lab, tmp_path):
    check = through_mx1(relay_lab, lab, tmp_path)
    r = check()
    assert (r.rc, r.line) == (0, FIRST_PROBE), r
    [probe] = relay_lab.headers(MONITOR)
    lmtp, mail, mx1 = received(probe)
    assert re.fullmatch(r"from mail\.lab\.test by mail\.lab\.test with LMTP id \S+ "
                        r"\(envelope-from <monitor@lab\.test>\) for <monitor@lab\.test>; .*", lmtp), lmtp
    assert re.fullmatch(r"from mx1\.lab\.test \(\S+ \[127\.0\.0\.1\]\) \(using TLSv1\.3 with cipher \S+ .*\) "
                        r"\(No client certificate requested\) by mail\.lab\.test \(Postfix\) with ESMTPS "
                        r"id \w+ for <monitor@lab\.test>; .*", mail), mail
    assert re.fullmatch(r"from probe\.lab\.test \(\S+ \[127\.0\.0\.1\]\) \(using TLSv1\.3 with cipher \S+ .*\) "
                        r"\(No client certificate requested\) by mx1\.lab\.test \(Postfix\) with ESMTPS "
                        r"id \w+ for <monitor@lab\.test>; .*", mx1), mx1
    r = check()
    assert r.rc == 0 and re.fullmatch(ROUND_TRIP, r.line), r


def test_a_hold_in_mx1_is_the_time_between_its_stamp_and_the_next_hops(relay_lab, lab, tmp_path):
    check = through_mx1(relay_lab, lab, tmp_path)
    relay_lab.hold(HOLD)
    r = check()
    assert (r.rc, r.line) == (0, FIRST_PROBE), r
    assert len(relay_lab.postfix.held()) == 1
    [probe] = relay_lab.headers(MONITOR, timeout=HOLD + 20)
    lmtp, mail, mx1 = (stamp(line) for line in received(probe))
    # Received dates have whole seconds
    assert HOLD - 1 <= mail - mx1 <= HOLD + 3, (mx1, mail)
    assert 0 <= lmtp - mail <= 1, (mail, lmtp)
    r = check()
    assert r.rc == 0 and re.fullmatch(ROUND_TRIP, r.line), r
    assert r.perf["rtt"] >= HOLD


def test_mail_held_in_mx1_until_released(relay_lab, lab):
    relay_lab.hold()
    relay_lab.postfix.send(to=MONITOR, sender=MONITOR)
    assert len(relay_lab.postfix.held()) == 1
    assert lab.messages(MONITOR) == []
    relay_lab.release()
    [mail] = relay_lab.headers(MONITOR)
    assert len(received(mail)) == 3
    assert relay_lab.postfix.held() == []
