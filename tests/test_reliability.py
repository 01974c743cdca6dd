"""Reliability against the lab: races, kill -9, damaged state, hostile mail, secrets.

Each test runs the real command; docs/reliability.md lists what each shows.
"""

import email.message
import email.utils
import fcntl
import imaplib
import json
import os
import random
import re
import ssl
import subprocess
import sys
import time

import pytest

from check_mail_roundtrip import probe as probe_format
from check_mail_roundtrip.state import file_stem
from tests.checkrun import COMMAND, Checker

STATUS_LINE = re.compile(r"MAIL_ROUNDTRIP (OK|WARNING|CRITICAL|UNKNOWN) - \S.*")
MONITOR = "monitor@lab.test"


def _state(check, name):
    with open(os.path.join(check.state_dir, file_stem(name) + ".json")) as f:
        return json.load(f)


def _returned_ids(stdout):
    return re.findall(r"^probe ([0-9a-f]{16}) returned", stdout, re.M)


def _books_balance(state):
    t = state["totals"]
    assert t["sent"] == t["returned"] + len(state["pending"]) + t["lost"], state


def _popen(check, *extra):
    return subprocess.Popen(
        [sys.executable, COMMAND, *check.args, *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=check.env,
        stdin=subprocess.DEVNULL,
    )


# -- 1. concurrency ------------------------------------------------------------

def test_ten_runs_of_one_profile_at_once(lab, tmp_path):
    check = Checker(lab, tmp_path, MONITOR, None, "imaps", "smtp", "--name", "race", "-v")
    returned = []
    for _round in range(4):
        procs = [_popen(check) for _ in range(10)]
        for p in procs:
            out, err = p.communicate(timeout=60)
            assert p.returncode in (0, 1, 2, 3), (out, err)
            assert STATUS_LINE.fullmatch(out.split("\n")[0]), (out, err)
            assert p.returncode == 0, (out, err)  # the lock serialises them; nothing is wrong
            returned += _returned_ids(out)
        lab.wait_for(MONITOR, lambda msgs: len(msgs) >= 1, timeout=10)
    time.sleep(0.5)
    final = check()
    returned += _returned_ids(final.stdout)
    assert len(returned) == len(set(returned)), "a probe was counted twice"
    state = _state(check, "race")
    _books_balance(state)
    assert state["totals"]["sent"] == 41
    assert state["totals"]["returned"] == len(returned) == 40
    assert len(state["pending"]) == 1


def test_a_run_that_cannot_get_the_lock_is_unknown(lab, tmp_path):
    check = Checker(lab, tmp_path, MONITOR, None, "imaps", "smtp", "--name", "locked", "-t", "4")
    os.makedirs(check.state_dir, exist_ok=True)
    lock_path = os.path.join(check.state_dir, file_stem("locked") + ".lock")
    with open(lock_path, "w") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX)
        r = check()
    assert r.rc == 3, r
    assert re.fullmatch(
        r"MAIL_ROUNDTRIP UNKNOWN - another run of this check holds the lock \S+\.lock \(waited \d\.\ds\)",
        r.line,
    ), r
    assert r.seconds < 4
    assert check().rc == 0  # the next run works


# -- 2. crash safety -----------------------------------------------------------

def test_kill_9_at_random_moments(lab, tmp_path):
    check = Checker(lab, tmp_path, MONITOR, None, "imaps", "smtp", "--name", "crash", "-v",
                    "--lost-after", "900")
    with open(lab.postfix_log, "rb") as f:
        f.seek(0, os.SEEK_END)
        log_start = f.tell()
    rng = random.Random(4711)
    returned = []
    for i in range(200):
        p = _popen(check)
        time.sleep(rng.uniform(0.02, 0.35))
        p.kill()
        out, _err = p.communicate(timeout=30)
        returned += _returned_ids(out)
        if i % 4 == 3:  # every fourth kill is followed by a normal run that must succeed
            r = check()
            assert r.rc == 0, r
            returned += _returned_ids(r.stdout)
            _books_balance(_state(check, "crash"))
    time.sleep(1.0)
    r = check()
    assert r.rc == 0, r
    returned += _returned_ids(r.stdout)
    assert len(returned) == len(set(returned)), "a probe was counted twice"
    state = _state(check, "crash")
    _books_balance(state)
    with open(lab.postfix_log, "rb") as f:
        f.seek(log_start)
        log = f.read().decode("utf-8", "replace")
    went_out = set(re.findall(r"message-id=<([0-9a-f]{16})\.\d+@lab\.test>", log))
    assert went_out, "no probe went out at all"
    known = set(state["counted"]) | set(state["pending"]) | set(state["lost"])
    assert went_out <= known, "probes that went out but are not accounted for: %s" % (went_out - known)
    # Declare what is still in flight lost: every probe ends returned or lost.
    in_flight = set(state["pending"])
    counted_before = set(state["counted"])  # the last run prunes old counted ids
    time.sleep(2.2)
    r = check("--lost-after", "2", "-w", "0.5", "-c", "1")
    returned += _returned_ids(r.stdout)
    assert len(returned) == len(set(returned)), "a probe was counted twice"
    state = _state(check, "crash")
    _books_balance(state)
    assert in_flight <= set(state["lost"]) | set(returned), (state, r.stdout)
    assert went_out <= counted_before | set(returned) | set(state["lost"]), "probes neither returned nor lost"
    assert len(state["pending"]) == 1  # only the probe this last run sent
    assert not [n for n in os.listdir(check.state_dir) if ".tmp-" in n]


# -- 3. damaged state ----------------------------------------------------------

DAMAGE = {
    "empty": (b"", "is not valid JSON"),
    "truncated": (b'{"schema": 1, "profile": "dmg", "pend', "is not valid JSON"),
    "garbage": (bytes(range(256)) * 4, "is not valid JSON"),
    "wrong shape": (b'{"schema": 1, "profile": "dmg", "pending": [1, 2]}', "is not a table of probe ids"),
    "not an object": (b"[1, 2, 3]", "not a JSON object"),
    "newer schema": (b'{"schema": 99, "profile": "dmg"}', "schema version 99 is newer than this check"),
}


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_damaged_state_file_is_kept_aside(lab, tmp_path, kind):
    content, reason = DAMAGE[kind]
    check = Checker(lab, tmp_path, MONITOR, None, "imaps", "smtp", "--name", "dmg")
    os.makedirs(check.state_dir, mode=0o700)
    path = os.path.join(check.state_dir, file_stem("dmg") + ".json")
    with open(path, "wb") as f:
        f.write(content)
    r = check()
    assert r.rc == 1, r
    assert re.fullmatch(
        r"MAIL_ROUNDTRIP WARNING - state file [^|]*%s[^|]*; kept aside as %s\.json\.damaged-\d{8}T\d{6}-\d+, "
        r"started afresh, first probe sent, 1 in flight \| lost=0;;;0 oldest_pending=0\.0s;120;600;0 pending=1;;;0"
        % (re.escape(reason), re.escape(file_stem("dmg"))),
        r.line,
    ), r
    aside = [n for n in os.listdir(check.state_dir) if ".damaged-" in n]
    assert len(aside) == 1
    with open(os.path.join(check.state_dir, aside[0]), "rb") as f:
        assert f.read() == content
    lab.wait_for(MONITOR, 1)
    r = check()
    assert r.rc == 0 and r.text.startswith("round trip "), r


def test_directory_at_the_state_path(lab, tmp_path):
    check = Checker(lab, tmp_path, MONITOR, None, "imaps", "smtp", "--name", "dmg")
    path = os.path.join(check.state_dir, file_stem("dmg") + ".json")
    os.makedirs(path)
    r = check()
    assert r.rc == 1 and "state file is a directory; kept aside as" in r.line, r
    assert os.path.isfile(path)
    assert check().rc == 0


def test_symlink_at_the_state_path_is_not_followed(lab, tmp_path):
    check = Checker(lab, tmp_path, MONITOR, None, "imaps", "smtp", "--name", "dmg")
    os.makedirs(check.state_dir, mode=0o700)
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    path = os.path.join(check.state_dir, file_stem("dmg") + ".json")
    os.symlink(str(victim), path)
    r = check()
    assert r.rc == 1 and "state file is a symlink (not followed); kept aside as" in r.line, r
    assert victim.read_text() == "precious\n"
    assert not os.path.islink(path) and os.path.isfile(path)
    lab.wait_for(MONITOR, 1)
    assert check().rc == 0
    assert victim.read_text() == "precious\n"


# -- 4. hostile and odd mail ---------------------------------------------------

def _imap(lab):
    ctx = ssl.create_default_context(cafile=lab.ca_file)
    conn = imaplib.IMAP4_SSL(lab.host, lab.ports["imaps"], ssl_context=ctx, timeout=10)
    conn.login(MONITOR, lab.users[MONITOR])
    return conn


def _append(lab, raw, flags=""):
    conn = _imap(lab)
    try:
        typ, data = conn.append("INBOX", flags, imaplib.Time2Internaldate(time.time()), raw)
        assert typ == "OK", data
    finally:
        conn.logout()


def _raw(subject, extra=b"", date=True, msgid=True, body=b"hello\r\n"):
    head = b"From: someone@lab.test\r\nTo: monitor@lab.test\r\n"
    if date:
        head += ("Date: %s\r\n" % email.utils.formatdate()).encode()
    if msgid:
        head += ("Message-ID: %s\r\n" % email.utils.make_msgid(domain="lab.test")).encode()
    return head + b"Subject: " + subject + b"\r\n" + extra + b"\r\n" + body


def _seen_as(m):
    """What must not change: subject, Message-ID and flags (\\Recent goes with any SELECT)."""
    return m["subject"], m.get("message_id"), frozenset(m["flags"]) - {"\\Recent"}


def test_hostile_and_odd_mail_is_never_counted_nor_touched(lab, tmp_path):
    name = "hostile"
    check = Checker(lab, tmp_path, MONITOR, None, "imaps", "smtp", "--name", name, "-v", "--keep")
    assert check().rc == 0  # first run: creates the secret, sends a probe (kept)
    lab.wait_for(MONITOR, 1)
    with open(os.path.join(check.state_dir, "secret"), "rb") as f:
        secret = f.read().strip()
    key = probe_format.search_key(name)
    now = time.time()
    genuine = probe_format.new_probe(name, now - 5)
    good = genuine.token(secret)
    forged = good[:-4] + ("0000" if not good.endswith("0000") else "1111")
    other = probe_format.new_probe("someone-else", now).token(secret)
    other_with_our_key = "%s.%s.%d.%s" % (key, "ab" * 8, int(now * 1000), "cd" * 16)
    hostile = [
        _raw(b"Mail round-trip probe " + forged.encode()),
        _raw(b"Fwd: " + other.encode() + b" " + key.encode()),
        _raw(b"probe " + other_with_our_key.encode()),
        _raw(b"probe " + good[:-10].encode()),                                # truncated token
        _raw(b"=?utf-8?B?" + __import__("base64").b64encode(("Prüfung " + forged).encode()) + b"?="),
        _raw(b"probe\r\n " + key.encode() + b".\r\n zzz"),                    # folded, no token
        _raw(b"\xff\xfe 8-bit \xc3( " + key.encode() + b" \xe9t\xe9"),         # invalid UTF-8
        _raw(key.encode() + b" " + b"x" * (1024 * 1024)),                      # a 1 MB subject
        _raw(b"Mail round-trip probe " + forged.encode(), date=False, msgid=False),
        _raw(b"other mail, not a probe"),
    ]
    for i, raw in enumerate(hostile):
        _append(lab, raw, flags="(\\Seen)" if i % 2 else "")
    # A genuine probe delivered twice: counted once, both copies cleaned.
    msg = probe_format.build_message(genuine, secret, MONITOR, MONITOR, "lab", now - 5)
    msg.replace_header("Subject", "AW: [EXTERNAL] " + msg["Subject"])
    raw_probe = msg.as_bytes(policy=email.policy.SMTP)
    _append(lab, raw_probe)
    _append(lab, raw_probe)
    before = {m["uid"]: m for m in lab.messages(MONITOR)}
    r = check("--name", name)  # --keep once more: read-only look
    assert r.rc == 0, r
    assert r.text.startswith("2 round trips") or r.text.startswith("round trip"), r
    assert len(re.findall(r"^probe %s returned" % genuine.probe_id, r.stdout, re.M)) == 1, r.stdout
    assert "duplicate of a probe already counted" in r.stdout
    assert "bad signature (forged or tampered token)" in r.stdout
    assert "token of another profile" in r.stdout
    after = {m["uid"]: m for m in lab.messages(MONITOR)}
    # --keep: nothing that was there changed (the run's own new probe may have arrived)
    assert {u: _seen_as(after[u]) for u in before if u in after} == {u: _seen_as(m) for u, m in before.items()}
    # Now without --keep: exactly our verified probes go, the rest stays as it was.
    plain = Checker(lab, tmp_path, MONITOR, None, "imaps", "smtp", "--name", name, "-v")
    r = plain()
    assert r.rc == 0, r
    remaining = {m["uid"]: m for m in lab.messages(MONITOR)}
    probe_msgid = re.compile(r"<[0-9a-f]{16}\.\d+@lab\.test>")  # what build_message writes
    ours = {uid for uid, m in before.items() if probe_msgid.fullmatch(m.get("message_id") or "")}
    assert len(ours) == 3  # the first run's probe and the two copies
    for uid, m in before.items():
        if uid in ours:
            assert uid not in remaining, m
        else:
            assert uid in remaining and _seen_as(remaining[uid]) == _seen_as(m), (m, remaining.get(uid))


# -- 8. secrets ------------------------------------------------------------------

def test_secrets_and_modes(lab, tmp_path):
    pwfile = tmp_path / "smtp-password"
    pwfile.write_text(lab.users[MONITOR] + "\n")
    check = Checker(lab, tmp_path, MONITOR, None, "imaps", "submission",
                    "--smtp-user", MONITOR, "--smtp-password-file", str(pwfile), "-vvv")
    outputs = []
    for _ in range(2):
        r = check()
        assert r.rc == 0, r
        outputs.append(r.stdout + r.stderr)
        lab.wait_for(MONITOR, 1)
    assert "LOGIN **REDACTED**" in outputs[0]
    assert re.search(r"(?i)auth plain \*\*\*\*", outputs[0]), outputs[0][:3000]
    assert os.stat(check.state_dir).st_mode & 0o777 == 0o700
    for name in os.listdir(check.state_dir):
        st = os.stat(os.path.join(check.state_dir, name))
        assert st.st_mode & 0o777 == 0o600, name
        with open(os.path.join(check.state_dir, name), "rb") as f:
            assert lab.users[MONITOR].encode() not in f.read(), name
    for out in outputs:
        assert lab.users[MONITOR] not in out


# -- 7. mail system faults over consecutive runs ------------------------------

def test_delivery_into_junk_reads_as_a_stall_then_loss(lab, tmp_path):
    """Probes filed as spam never reach the watched folder: CRITICAL, then lost.

    The probes stay in Junk untouched (only the watched folder is searched).
    """
    check = Checker(lab, tmp_path, MONITOR, None, "imaps", "smtp", "--name", "junk",
                    "-w", "1", "-c", "2", "--lost-after", "4")
    lab.junk()
    r = check()
    assert r.line == ("MAIL_ROUNDTRIP OK - first probe sent, 1 in flight "
                      "| lost=0;;;0 oldest_pending=0.0s;1;2;0 pending=1;;;0"), r
    lab.wait_for(MONITOR, 1, folder="Junk")
    time.sleep(2.2)
    r = check()
    assert r.rc == 2, r
    assert re.fullmatch(
        r"MAIL_ROUNDTRIP CRITICAL - probe in flight for 2\.\d+s > 2s, no probe back this run, 2 in flight, "
        r"no success yet "
        r"\| lost=0;;;0 oldest_pending=2\.\d+s;1;2;0 pending=2;;;0", r.line), r
    time.sleep(2.2)
    r = check()
    assert r.rc == 2, r
    assert re.fullmatch(
        r"MAIL_ROUNDTRIP CRITICAL - probe in flight for \d\.\d+s > 2s, 1 probe lost > 0, no probe back this run, "
        r"2 in flight, "
        r"no success yet \| lost=1;;;0 oldest_pending=\d\.\d+s;1;2;0 pending=2;;;0", r.line), r
    junk = lab.messages(MONITOR, folder="Junk")
    assert len(junk) == 3 and all("MRTP1." in (m["subject"] or "") for m in junk)
    lab.junk(False)
    r = check.until(lambda r: r.rc == 0 and "round trip" in r.text, timeout=10)
    assert r.rc == 0, r
    assert len(lab.messages(MONITOR, folder="Junk")) == 3
