"""Abandoned profiles clean up, and state files keep readable names.

Trying options out starts new profiles.  Their probes (signed with the same
secret) and state files are removed once they are older than 7 days (or
twice --lost-after): checked against the lab with mails appended with old
arrival dates, and nothing that is not such a probe is touched.  The rules
themselves (twice a longer --lost-after, gone nodes, --keep and POP3, a
failing look) are proven in memory (tests/test_mem_housekeeping.py).
"""

import email.policy
import imaplib
import json
import os
import re
import ssl
import time

from check_mail_roundtrip import probe as probe_format, state as state_mod
from check_mail_roundtrip.state import State, StateStore, file_stem
from tests.checkrun import Checker

MONITOR = "monitor@lab.test"
DAY = 86400


# -- file names -----------------------------------------------------------------------------

def test_long_profile_names_are_cut_between_fields_and_stay_unique():
    profile = ("monitor-with-a-long-name@customer-number-one.example.org>echo@far-away-provider.example "
               "smtp:smtp.customer-number-one.example.org:587 imap:imap.customer-number-one.example.org:993/INBOX")
    stem = file_stem(profile)
    readable, digest = stem.rsplit("-", 1)
    assert re.fullmatch(r"[0-9a-f]{10}", digest)
    assert len(readable) <= state_mod.STEM_CHARS
    fields = re.sub(r"[^A-Za-z0-9.@+-]+", "_", profile).split("_")
    assert readable.split("_") == fields[: len(readable.split("_"))], readable  # whole fields only
    assert file_stem(profile + " ") != stem
    assert file_stem("a@b>a@b smtp:mx:25 imap:mx:993/INBOX").startswith("a@b_a@b_smtp_mx_25_imap_mx_993_INBOX-")


def test_a_state_file_under_the_old_name_is_taken_over(tmp_path):
    profile = "x" * 70 + " smtp:mx:25"
    old = os.path.join(tmp_path, state_mod._legacy_stem(profile) + ".json")
    state = State(profile)
    state.pending = {"a" * 16: 1700000000000}
    with open(old, "w") as f:
        json.dump(state.to_json(), f)
    store = StateStore(str(tmp_path), profile)
    assert store.path != old
    loaded, problem = store.load()
    assert problem is None and loaded.pending == state.pending
    assert os.path.exists(store.path) and not os.path.exists(old)


# -- the token: anyone with the secret can verify it ---------------------------------------------

def test_probes_signed_over_the_profile_name_by_earlier_versions_still_count():
    secret, profile = b"k" * 32, "legacy"
    old = "%s.%s.%s.%d.%s" % (probe_format.VERSION, probe_format.profile_key(profile), "ab" * 8, 1700000000000,
                              probe_format._signature(secret, profile, "ab" * 8, 1700000000000))
    found, why = probe_format.recognise(("Subject: x %s\r\n" % old).encode(), secret, profile)
    assert why is None and found.probe_id == "ab" * 8


def test_own_token_needs_only_the_secret():
    secret = b"s" * 32
    token = probe_format.Probe("someone else", "cd" * 8, 1700000000000).token(secret)
    header = ("Subject: Mail round-trip probe %s\r\n" % token).encode()
    assert probe_format.own_token(header, secret).key == probe_format.profile_key("someone else")
    assert probe_format.own_token(header, b"t" * 32) is None
    bounce = header + b"Content-Type: multipart/report; report-type=delivery-status\r\n"
    assert probe_format.own_token(bounce, secret) is None


# -- against the lab ----------------------------------------------------------------------------

def _imap(lab):
    conn = imaplib.IMAP4_SSL(lab.host, lab.ports["imaps"], timeout=10,
                             ssl_context=ssl.create_default_context(cafile=lab.ca_file))
    conn.login(MONITOR, lab.users[MONITOR])
    return conn


def _append_probe(conn, secret, profile, age, subject_prefix="", report=False):
    """A probe of *profile* sent *age* seconds ago, delivered then (INTERNALDATE)."""
    sent = time.time() - age
    probe = probe_format.new_probe(profile, sent)
    msg = probe_format.build_message(probe, secret, MONITOR, MONITOR, "lab", sent)
    if report:
        msg.replace_header("Content-Type", "multipart/report; report-type=delivery-status; boundary=x")
    if subject_prefix:
        msg.replace_header("Subject", subject_prefix + msg["Subject"])
    data = msg.as_bytes(policy=email.policy.SMTP.clone(max_line_length=998))
    typ, _ = conn.append("INBOX", None, imaplib.Time2Internaldate(sent), data)
    assert typ == "OK"
    return probe.probe_id


def _append_plain(conn, age, subject):
    data = ("From: someone@lab.test\r\nTo: %s\r\nSubject: %s\r\n\r\nhello\r\n" % (MONITOR, subject)).encode()
    assert conn.append("INBOX", None, imaplib.Time2Internaldate(time.time() - age), data)[0] == "OK"


def _subjects(lab):
    return sorted(m["subject"] for m in lab.messages(MONITOR))


def _old_state_file(directory, profile, age):
    store = StateStore(directory, profile)
    state_mod.ensure_directory(directory)
    store.save(State(profile))
    os.utime(store.path, (time.time() - age, time.time() - age))
    return store.path


def test_abandoned_profiles_probes_and_state_files_are_removed_and_nothing_else(lab, tmp_path):
    secret_file = tmp_path / "secret"
    secret_file.write_text("0123456789abcdef" * 4 + "\n")
    os.chmod(secret_file, 0o600)
    secret = ("0123456789abcdef" * 4).encode()
    check = Checker(lab, tmp_path, MONITOR, None, "imaps", "smtp", "--name", "current",
                    "--secret-file", str(secret_file))
    conn = _imap(lab)
    try:
        gone = _append_probe(conn, secret, "tried once", 8 * DAY)
        gone_fwd = _append_probe(conn, secret, "tried twice", 30 * DAY, subject_prefix="Fwd: ")
        other_secret = _append_probe(conn, b"another secret, another check!!", "tried once", 8 * DAY)
        young = _append_probe(conn, secret, "still in use", 2 * DAY)
        bounce = _append_probe(conn, secret, "tried once", 9 * DAY, report=True)
        _append_plain(conn, 40 * DAY, "an old mail MRTP1. about probes")
    finally:
        conn.logout()
    keep_ids = {other_secret, young, bounce}
    old_state = _old_state_file(check.state_dir, "tried once", 8 * DAY)
    young_state = _old_state_file(check.state_dir, "still in use", 2 * DAY)
    foreign = os.path.join(check.state_dir, "notes-0123456789.json")
    with open(foreign, "w") as f:
        json.dump({"profile": "whatever"}, f)
    os.utime(foreign, (time.time() - 30 * DAY,) * 2)

    r = check("-v")
    assert r.rc == 0 and r.line.startswith("MAIL_ROUNDTRIP OK - first probe sent"), r
    assert ("removed 2 probe(s) of abandoned profiles or nodes (signed with this check's secret, sent more than 7d ago)"
            in r.stdout), r.stdout
    assert ("removed the state file of abandoned profile 'tried once' (no run for more than 7d): %s"
            % os.path.basename(old_state)) in r.stdout, r.stdout
    subjects = " ".join(_subjects(lab))
    assert gone not in subjects and gone_fwd not in subjects
    assert all(i in subjects for i in keep_ids), subjects
    assert "an old mail MRTP1. about probes" in subjects
    assert not os.path.exists(old_state) and not os.path.exists(old_state[:-5] + ".lock")
    assert os.path.exists(young_state) and os.path.exists(foreign)

    # once a day only: a new abandoned probe waits for tomorrow's look
    conn = _imap(lab)
    try:
        later = _append_probe(conn, secret, "tried once", 8 * DAY)
    finally:
        conn.logout()
    r = check("-v")
    assert r.rc == 0 and "of abandoned profile" not in r.stdout, r
    assert later in " ".join(_subjects(lab))
