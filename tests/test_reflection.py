"""What the reflector may send back, and the legs (lib/check_mail_roundtrip/reflection.py, reflector_rules.py).
Pure logic: no I/O, no clock, no lab."""

import email
import email.policy

from hypothesis import given, strategies as st

from check_mail_roundtrip import ledger
from check_mail_roundtrip.probe import RETURN_HEADER, STAMP_HEADER, Probe, build_message
from check_mail_roundtrip.reflection import legs, read_stamp, return_header, signed_return
from check_mail_roundtrip.reflector_rules import Memory, build_reflection, decide, token_text
from check_mail_roundtrip.state import State

WIRE = email.policy.SMTP.clone(max_line_length=998, linesep="\n")  # as the check sends it
SECRET = b"s" * 32
OTHER = b"o" * 32
NOW = 1_800_000_000.0
FROM = "monitor@example.org"


def probe_mail(sent=NOW - 2, mail_from=FROM, secret=SECRET, signed_for=None, extra=(), drop=()):
    """A probe as the check sends it (headers and body, bytes), with changes."""
    p = Probe("profile", "0123456789abcdef", int(sent * 1000))
    msg = build_message(p, secret, mail_from, "reflector@far.example", "mon1", sent)
    msg[RETURN_HEADER] = return_header(p.token(secret), signed_for or mail_from, secret)
    for name in drop:
        del msg[name]
    for name, value in extra:
        msg[name] = value
    return msg.as_bytes(policy=WIRE), p


def headers(raw):
    return raw.split(b"\n\n", 1)[0]


def decided(raw, sender="monitor@example.org", memory=None, now=NOW, max_age=3600, rate=10, secret=SECRET):
    return decide(headers(raw), sender, secret, memory or Memory(), now, max_age, rate)


def test_a_genuine_probe_is_reflected_to_its_signed_from():
    raw, p = probe_mail()
    d = decided(raw)
    assert d.to == FROM and d.why is None and d.token.probe_id == p.probe_id


def test_the_return_address_is_signed_and_must_be_the_from():
    raw, _ = probe_mail()
    forged = raw.replace(b"From: monitor@example.org", b"From: victim@example.net")
    assert decided(forged).why == "From (victim@example.net) is not the signed return address"
    raw, _ = probe_mail(signed_for="victim@example.net")  # signed for someone else than the From
    assert decided(raw).to is None
    tampered = probe_mail()[0].replace(b"X-Mail-Roundtrip-Return: monitor@", b"X-Mail-Roundtrip-Return: victim@")
    assert decided(tampered).why == "no signed return address"
    assert decided(probe_mail(drop=(RETURN_HEADER,))[0]).why == "no signed return address"


def test_mail_not_signed_with_the_secret_is_dropped():
    assert decided(probe_mail(secret=OTHER)[0]).why == "no probe signed with this secret"
    assert decided(b"From: a@b.example\nSubject: hello\n\nhi\n").why == "no probe signed with this secret"


def test_bounces_automatic_and_reflected_mail_are_never_answered():
    raw, _ = probe_mail()
    assert decided(raw, sender="").why == "a bounce (null envelope sender)"
    assert decided(raw, sender="<>").why == "a bounce (null envelope sender)"
    assert decided(probe_mail(extra=(("Return-Path", "<>"),))[0], sender=None).why.startswith("a bounce")
    report = raw.replace(b"Content-Type: text/plain", b"Content-Type: multipart/report; report-type=delivery-status")
    assert decided(report).why == "a delivery report (bounce)"
    assert decided(probe_mail(extra=(("Auto-Submitted", "auto-replied"),))[0]).why.startswith("an automatic mail")
    assert decided(probe_mail(extra=(("Auto-Submitted", "no"),))[0]).to == FROM
    assert decided(probe_mail(extra=(("Precedence", "bulk"),))[0]).why.startswith("a bulk or list mail")
    assert decided(probe_mail(extra=((STAMP_HEADER, "x"),))[0]).why.startswith("reflected already")


def test_old_replayed_and_future_probes_are_dropped():
    raw, p = probe_mail(sent=NOW - 7200)
    assert decided(raw, max_age=3600).why == "sent 7200s ago, more than --max-age 3600s"
    raw, p = probe_mail(sent=NOW + 3600)
    assert "in the future" in decided(raw).why
    raw, p = probe_mail()
    memory = Memory()
    memory.record(p.probe_id, FROM, NOW - 10)
    d = decided(raw, memory=memory)
    assert d.why == "reflected before (a duplicate)" and d.again


def test_the_rate_limit_is_per_address_and_per_minute():
    memory = Memory()
    for i in range(3):
        memory.record("id%d" % i, FROM, NOW - 50 + i)
    raw, _ = probe_mail()
    assert decided(raw, memory=memory, rate=3).why == "rate limit: 3 reflections to monitor@example.org in the last minute"
    assert decided(raw, memory=memory, rate=4).to == FROM
    memory.prune(NOW + 11, 3600)  # the first is now more than a minute old
    assert decided(raw, memory=memory, now=NOW + 11, rate=3).to == FROM


def test_memory_forgets_what_cannot_matter_and_survives_json():
    m = Memory()
    m.record("old", FROM, NOW - 4000)
    m.record("new", FROM, NOW - 5)
    m.prune(NOW, 3600)
    assert set(m.reflected) == {"new"} and m.recent == {FROM: [NOW - 5]}
    assert Memory.from_json(m.to_json()) == m


def test_the_reflection_keeps_the_token_and_carries_a_verifiable_stamp():
    raw, p = probe_mail()
    d = decided(raw)
    msg = build_reflection(d, int(NOW * 1000), int(NOW * 1000) + 250, SECRET, "reflector@far.example", "far1")
    token = p.token(SECRET)
    assert token in msg["Subject"] and msg["X-Mail-Roundtrip"] == token
    assert msg["To"] == FROM and msg["Auto-Submitted"] == "auto-replied"
    assert msg["In-Reply-To"] == d.message_id
    block = headers(msg.as_bytes(policy=WIRE))
    assert read_stamp(block, token, SECRET) == (int(NOW * 1000), int(NOW * 1000) + 250)
    assert read_stamp(block, token, OTHER) is None
    assert read_stamp(block.replace(b"received=18", b"received=17"), token, SECRET) is None
    # a reflection is never reflected again, by this reflector or another
    assert decided(msg.as_bytes(policy=WIRE), sender="reflector@far.example").why.startswith("reflected already")


def test_signed_return_tells_tampering():
    value = return_header("MRTP1.x", "Monitor <monitor@Example.ORG>", SECRET)
    assert value.startswith("monitor@example.org; sig=")
    assert signed_return(value, "MRTP1.x", SECRET) == "monitor@example.org"
    assert signed_return(value, "MRTP1.y", SECRET) is None
    assert signed_return(value, "MRTP1.x", OTHER) is None
    assert signed_return("nonsense", "MRTP1.x", SECRET) is None


def test_legs_from_two_clocks():
    assert legs(100.0, 140.0, 141.0, 143.0, 43.0) == (40.0, 2.0, None)
    out, back, note = legs(100.0, 90.0, 91.0, 143.0, 43.0)  # the reflector's clock is 50 s behind
    assert out is None and back is None and "clock" in note
    out, back, note = legs(100.0, 103.0, 104.0, 110.0, 10.0)
    assert (out, back, note) == (3.0, 6.0, None)
    out, back, note = legs(100.0, 99.0, 99.5, 110.0, 10.0)  # within the tolerance: clamped at 0
    assert out == 0.0 and back is None and "leg back" in note  # back 10.5 s > the round trip


@given(st.floats(0, 1e4), st.floats(0, 1e4), st.floats(0, 1e4))
def test_legs_are_never_negative_nor_above_the_round_trip(out, dwell, back):
    sent = 1000.0
    received, reflected = sent + out, sent + out + dwell
    arrival = reflected + back
    rtt = arrival - sent
    leg_out, leg_back, note = legs(sent, received, reflected, arrival, rtt)
    for leg in (leg_out, leg_back):
        assert leg is None or 0 <= leg <= rtt
    assert note is None and abs(leg_out + dwell + leg_back - rtt) < 1e-6


def test_the_ledger_reports_the_legs_of_a_stamped_probe_and_flags_skew():
    state = State("profile")
    p = Probe("profile", "0123456789abcdef", int((NOW - 10) * 1000))
    ledger.record_sent(state, p)
    stamped = ledger.Arrival(p, NOW - 2, 1, stamp=(int((NOW - 7) * 1000), int((NOW - 6) * 1000)))
    out = ledger.reconcile(state, [stamped], NOW, 3600)
    assert out.slowest_legs == (3.0, 5.0)
    q = Probe("profile", "fedcba9876543210", int((NOW - 10) * 1000))
    ledger.record_sent(state, q)
    skewed = ledger.Arrival(q, NOW - 2, 2, stamp=(int((NOW - 100) * 1000), int((NOW - 99) * 1000)))
    out = ledger.reconcile(state, [skewed], NOW, 3600)
    assert out.slowest_legs == (None, None)
    assert any("clock" in n for n in out.notes)


def test_token_text_is_the_token_as_sent():
    raw, p = probe_mail()
    assert token_text(decided(raw).token) == p.token(SECRET)
    assert email.message_from_bytes(raw)["X-Mail-Roundtrip"] == p.token(SECRET)


# -- hostile probes: control characters, addresses in any case ---------------------

CONTROL = "\r\n\x00\x07\x1b\x7f\x85\u2028"


def test_nothing_of_a_probe_brings_a_control_character_into_the_reflection():
    raw, p = probe_mail()
    d = decided(raw)
    token = p.token(SECRET)
    d.subject = "Mail round-trip probe %s\r\nBcc: victim@example.net%s[2J" % (token, CONTROL)
    d.message_id = "<a@b>\r\nX-Injected: yes" + CONTROL
    msg = build_reflection(d, int(NOW * 1000), int(NOW * 1000), SECRET, "reflector\x1b@far.example", "far\r\n1")
    assert msg["Subject"] == "Mail round-trip probe %sBcc: victim@example.net[2J" % token
    assert msg["In-Reply-To"] == msg["References"] == "<a@b>X-Injected: yes"
    assert msg["From"] == "reflector@far.example"
    wire = msg.as_bytes(policy=WIRE)
    assert not any(c in wire.decode("ascii") for c in CONTROL.replace("\n", "")), wire
    assert not [line for line in wire.split(b"\n") if line.startswith((b"Bcc:", b"X-Injected:"))], wire


def test_the_rate_limit_counts_an_address_in_any_case():
    memory = Memory()
    memory.record("id0", "MONITOR@example.org", NOW - 5)
    raw, _ = probe_mail()
    assert decided(raw, memory=memory, rate=1).why == "rate limit: 1 reflections to monitor@example.org in the last minute"
    memory.forget("id0", "MONITOR@example.org", NOW - 5)  # a reflection that was not sent after all
    assert memory == Memory()
    # a state written before addresses were folded: its counts add up
    old = Memory.from_json({"reflected": {}, "recent": {"Monitor@example.org": [NOW - 5], FROM: [NOW - 4]}})
    assert old.recent == {FROM: [NOW - 5, NOW - 4]}
    assert decided(raw, memory=old, rate=2).why.startswith("rate limit: 2 reflections")
