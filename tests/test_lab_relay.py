"""The relay lab: probes sent by the real check to mx1.lab.test, a second Postfix, reach the
lab's mailbox over two MTAs with the trace a postmaster would read: a Received line per hop
(TLS on the relay hop), a hold in mx1's queue as that hop's time, mx1's DKIM signature and
mail.lab.test's Authentication-Results (DKIM, SPF, DMARC) as real servers write them."""

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


def fields(msg, name):
    """The fields *name* of *msg*, unfolded, newest first."""
    return [" ".join(value.split()) for value in msg.get_all(name, [])]


def received(msg):
    return fields(msg, "Received")


def verdicts(msg):
    """The Authentication-Results fields of *msg*, unfolded, newest first."""
    return fields(msg, "Authentication-Results")


def stamp(line):
    """The date of a Received line (after its last ';'), as a POSIX time."""
    return email.utils.parsedate_to_datetime(line.rsplit(";", 1)[1]).timestamp()


def test_a_probe_through_mx1_has_a_received_line_per_hop_with_tls_on_the_relay_hop_and_passes_dkim_spf_dmarc(
        relay_lab, lab, tmp_path):
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
    [signature] = fields(probe, "DKIM-Signature")
    assert re.match(r"v=1; a=rsa-sha256; c=relaxed/simple; d=lab\.test; s=lab; t=\d+; ", signature), signature
    dmarc, dkim, spf = verdicts(probe)
    assert dmarc == "mail.lab.test; dmarc=pass (p=reject dis=none) header.from=lab.test"
    assert re.fullmatch(r"mail\.lab\.test; dkim=pass \(2048-bit key\) header\.d=lab\.test header\.i=@lab\.test "
                        r"header\.a=rsa-sha256 header\.s=lab header\.b=\S+; dkim-atps=neutral", dkim), dkim
    assert spf == ("mail.lab.test; spf=pass (sender SPF authorized) smtp.mailfrom=lab.test (client-ip=127.0.0.1; "
                   "helo=mx1.lab.test; envelope-from=monitor@lab.test; receiver=lab.test)")
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


def test_a_probe_signed_with_a_key_the_receiver_does_not_publish_fails_dkim(relay_lab, lab, tmp_path):
    check = through_mx1(relay_lab, lab, tmp_path)
    relay_lab.break_dkim()
    assert check().rc == 0
    [probe] = relay_lab.headers(MONITOR)
    dmarc, dkim, spf = verdicts(probe)
    assert re.fullmatch(r"mail\.lab\.test; dkim=fail reason=\"signature verification failed\" \(2048-bit key\) "
                        r"header\.d=lab\.test header\.i=@lab\.test header\.a=rsa-sha256 header\.s=lab "
                        r"header\.b=\S+; dkim-atps=neutral", dkim), dkim
    # DMARC passes still, through SPF
    assert dmarc == "mail.lab.test; dmarc=pass (p=reject dis=none) header.from=lab.test"
    assert spf.startswith("mail.lab.test; spf=pass ")
    relay_lab.fix_dkim()
    r = check()
    assert r.rc == 0 and re.fullmatch(ROUND_TRIP, r.line), r
    [probe] = relay_lab.headers(MONITOR)
    assert verdicts(probe)[1].startswith("mail.lab.test; dkim=pass (2048-bit key) header.d=lab.test ")


def test_mail_straight_to_the_lab_is_not_judged(relay_lab, lab):
    lab.send(to=MONITOR, sender=MONITOR)
    [mail] = relay_lab.headers(MONITOR)
    assert len(received(mail)) == 2
    assert verdicts(mail) == []
    assert mail["DKIM-Signature"] is None
