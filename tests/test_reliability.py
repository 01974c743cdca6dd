"""Reliability against the lab: races, kill -9, damaged state, hostile mail, secrets.

Each test runs the real command; docs/explanation/reliability.md lists what each shows.
"""

import base64
import email.message
import email.utils
import fcntl
import imaplib
import json
import os
import random
import re
import socket
import ssl
import subprocess
import sys
import time

import pytest

from check_mail_roundtrip import probe as probe_format
from check_mail_roundtrip.state import file_stem
from tests.checkrun import COMMAND, ROOT, Checker

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
    # -t 60: the lock wait is a quarter of the budget, and ten runs serialised on
    # a loaded two-core CI machine may need more than the default's 7 s.
    check = Checker(lab, tmp_path, MONITOR, None, "imaps", "smtp", "--name", "race", "-v", "-t", "60")
    returned = []
    for _round in range(4):
        procs = [_popen(check) for _ in range(10)]
        for p in procs:
            out, err = p.communicate(timeout=90)
            assert p.returncode in (0, 1, 2, 3), (out, err)
            assert STATUS_LINE.fullmatch(out.split("\n")[0]), (out, err)
            assert p.returncode == 0, (out, err)  # the lock serialises them; nothing is wrong
            returned += _returned_ids(out)
        lab.wait_for(MONITOR, lambda msgs: len(msgs) >= 1, timeout=10)
    # Every probe still in flight must be in the mailbox before the last run collects.
    in_flight = set(_state(check, "race")["pending"])
    assert in_flight
    lab.wait_for(MONITOR, lambda msgs: in_flight <= {(m["message_id"] or "<")[1:17] for m in msgs}, timeout=20)
    final = check()
    assert final.rc == 0, final
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

def _postfix_log_from(lab, offset):
    with open(lab.postfix_log, "rb") as f:
        f.seek(offset)
        return f.read().decode("utf-8", "replace")


def _log_end(lab):
    with open(lab.postfix_log, "rb") as f:
        return f.seek(0, os.SEEK_END)


def _delivered_probe_ids(log):
    """Probe ids whose mail Postfix accepted (message-id logged) and delivered (status=sent)."""
    queued = dict(re.findall(r"\b([0-9A-F]{6,}): message-id=<([0-9a-f]{16})\.\d+@lab\.test>", log))
    delivered = set(re.findall(r"\b([0-9A-F]{6,}): to=<[^>]*>.*\bstatus=sent\b", log))
    return {pid for qid, pid in queued.items() if qid in delivered}


def _known_ids(check, name):
    try:
        state = _state(check, name)
    except FileNotFoundError:
        return set()
    return set(state["pending"]) | set(state["counted"]) | set(state["lost"])


def _wait_queue_empty(lab, timeout=15.0):
    deadline = time.monotonic() + timeout
    while lab._queue_files():
        assert time.monotonic() < deadline, "Postfix queue not empty after %ss: %s" % (timeout, lab.queue())
        time.sleep(0.05)


def _kill_when_handed_over(p, lab, offset, limit):
    """Kill *p* the moment Postfix's log, read from *offset*, names a message-id (the run's
    probe was handed over), or when *p* has run *limit* seconds; polled every millisecond."""
    deadline = time.monotonic() + limit
    with open(lab.postfix_log, "rb") as log:
        while p.poll() is None and time.monotonic() < deadline:
            log.seek(offset)
            if b": message-id=<" in log.read():
                break
            time.sleep(0.001)
    p.kill()


KILLS = 200   # kills spread over a whole run, start-up included; those that fall after the start-up are made


def _start_up_time(check):
    """How long a run takes to end at a usage error (the fastest of three): a run killed sooner
    has not touched anything yet (test_usage_errors_are_unknown: nothing was done)."""
    times = []
    for _ in range(3):
        t0 = time.monotonic()
        p = _popen(check, "--wait=-1")
        out, err = p.communicate(timeout=60)
        times.append(time.monotonic() - t0)
        assert p.returncode == 3 and "usage error" in out, (out, err)
    return min(times)


def test_kill_9_at_random_moments(lab, tmp_path):
    name = "crash"
    check = Checker(lab, tmp_path, MONITOR, None, "imaps", "smtp", "--name", name, "-v",
                    "--lost-after", "900")
    log_start = _log_end(lab)
    returned = []
    # How long a normal run takes here (the median of 3 after the profile's first run, which
    # does more: the secret, the first look for abandoned probes), so the kills spread over
    # the whole run -- lock, collecting, deleting, sending, writing state -- not just the
    # interpreter's start-up.
    durations = []
    for _ in range(4):
        t0 = time.monotonic()
        p = _popen(check)
        out, err = p.communicate(timeout=60)
        durations.append(time.monotonic() - t0)
        assert p.returncode == 0, (out, err)
        returned += _returned_ids(out)
        lab.wait_for(MONITOR, 1)
    # The kills fall between the end of the start-up and a little past the run's usual end: as many
    # as fell there when KILLS were spread over the whole run.  Each is a fraction of the run's
    # time, taken anew from the last three normal runs (the machine's load changes as the suite
    # goes on: the other worker's tests).
    run_time = sorted(durations[1:])[1]
    start_up = min(_start_up_time(check), run_time / 2)
    kills = round(KILLS * (1.1 * run_time - start_up) / (1.1 * run_time))
    rng = random.Random(4711)
    # One kill in each of kills - kills // 4 equal slots of that span (spread evenly, each at a
    # random point of its slot).  The other quarter are watched kills: the run is killed the
    # moment Postfix logs its probe's message-id (the probe has gone out; the run is waiting
    # for the 250 or saving the state), a stretch of a few milliseconds that timed draws miss
    # whenever the run is slower or faster than measured.
    spread = kills - kills // 4
    fractions = [(start_up + (k + rng.random()) * (1.1 * run_time - start_up) / spread) / run_time
                 for k in range(spread)]
    fractions += [None] * (kills // 4)  # watched
    rng.shuffle(fractions)
    killed = []       # (probe id recorded by the killed run or None), for runs really killed
    attempts = 0
    while len(killed) < kills:  # a kill drawn past the end of a run finds it finished
        assert attempts < 2 * kills, "only %d of %d runs were still running at their kill" % (len(killed), attempts)
        i, attempts = attempts, attempts + 1
        before = _known_ids(check, name)
        offset = _log_end(lab)
        p = _popen(check)
        if fractions[i % kills] is None:
            _kill_when_handed_over(p, lab, offset, limit=10 * run_time + 5)
        else:
            time.sleep(fractions[i % kills] * run_time)
            p.kill()
        out, _err = p.communicate(timeout=30)
        returned += _returned_ids(out)
        if p.returncode == -9:
            new = _known_ids(check, name) - before
            assert len(new) <= 1, new  # a run records at most its own probe
            killed.append(next(iter(new), None))
        if i % 4 == 3:  # every fourth run is followed by a normal run that must succeed
            t0 = time.monotonic()
            r = check()
            durations.append(time.monotonic() - t0)
            run_time = sorted(durations[-3:])[1]
            assert r.rc == 0, r
            returned += _returned_ids(r.stdout)
            _books_balance(_state(check, name))
    assert len(returned) == len(set(returned)), "a probe was counted twice"
    # Everything Postfix accepted is delivered (~0.1 s in the lab); then one normal
    # run collects all of it, and the final run below finds only that run's probe.
    _wait_queue_empty(lab)
    r = check()
    assert r.rc == 0, r
    returned += _returned_ids(r.stdout)
    last = re.findall(r"^probe ([0-9a-f]{16}) sent", r.stdout, re.M)
    assert len(last) == 1, r.stdout
    sent_at = time.time()
    lab.wait_for(MONITOR, lambda msgs: any(last[0] in (m["message_id"] or "") for m in msgs))
    assert len(returned) == len(set(returned)), "a probe was counted twice"
    state = _state(check, name)
    _books_balance(state)
    went_out = _delivered_probe_ids(_postfix_log_from(lab, log_start))
    known = set(state["counted"]) | set(state["pending"]) | set(state["lost"])
    assert went_out <= known, "probes that went out but are not accounted for: %s" % (went_out - known)
    # The kills landed across the whole run: early (before this run's probe was
    # recorded), between recording and the SMTP hand-over, and after the hand-over.
    late = [pid for pid in killed if pid is not None and pid in went_out]
    early = [pid for pid in killed if pid is None]
    assert len(late) >= 5, "only %d of %d kills landed after the probe went out" % (len(late), len(killed))
    assert len(early) >= 5, "only %d of %d kills landed before the probe was recorded" % (len(early), len(killed))
    # Declare what is still in flight lost: every probe ends returned or lost.
    in_flight = set(state["pending"])
    counted_before = set(state["counted"])  # the last run prunes old counted ids
    time.sleep(max(0.0, sent_at + 2.3 - time.time()))
    # the arrival time has whole seconds: a probe sent at x.9 and there at x+1.0 reads as up to 1.1s
    r = check("--lost-after", "2", "-w", "1.5", "-c", "1.9")
    assert r.rc in (0, 1), r  # lost probes warn
    returned += _returned_ids(r.stdout)
    assert last[0] in _returned_ids(r.stdout), r.stdout
    assert len(returned) == len(set(returned)), "a probe was counted twice"
    state = _state(check, name)
    _books_balance(state)
    # a probe still in flight ends returned or lost, or, if its run was killed before the
    # server confirmed it and it never went out, forgotten (said in -v), never "lost"
    forgotten = in_flight - set(state["lost"]) - set(returned)
    assert not forgotten & went_out, (forgotten & went_out, r.stdout)
    assert all("probe %s forgotten, not counted as lost" % pid in r.stdout for pid in forgotten), r.stdout
    assert went_out <= counted_before | set(returned) | set(state["lost"]), "probes neither returned nor lost"
    # A probe that was delivered was collected and counted; it can only end "lost"
    # if a run removed it from the mailbox before saving that it was counted.
    assert not went_out & set(state["lost"]), (
        "probes delivered to the mailbox but never counted (removed before the state was saved?): %s"
        % sorted(went_out & set(state["lost"])))
    assert len(state["pending"]) == 1  # only the probe this last run sent
    assert not [n for n in os.listdir(check.state_dir) if ".tmp-" in n]


# A run that dies the instant its delete reached the server (os._exit: no clean-up,
# like kill -9) -- a fixed point of the run that random kills only rarely hit.
_DIE_AFTER_REMOVE = """
import os, sys
sys.path.insert(0, sys.argv.pop(1))
from check_mail_roundtrip import imap
_remove = imap.ImapCollector.remove
def remove(self, uids):
    _remove(self, uids)
    if uids:
        os._exit(137)
imap.ImapCollector.remove = remove
from check_mail_roundtrip.cli import main
main()
"""


def test_death_right_after_the_delete_loses_nothing(lab, tmp_path):
    name = "die-after-delete"
    check = Checker(lab, tmp_path, MONITOR, None, "imaps", "smtp", "--name", name, "-v",
                    "--lost-after", "3", "-w", "1", "-c", "2")
    assert check().rc == 0
    first = set(_state(check, name)["pending"])
    lab.wait_for(MONITOR, 1)
    p = subprocess.run([sys.executable, "-c", _DIE_AFTER_REMOVE, os.path.join(ROOT, "lib"), *check.args],
                       capture_output=True, text=True, env=check.env, timeout=60, stdin=subprocess.DEVNULL)
    assert p.returncode == 137, p
    assert lab.messages(MONITOR) == []  # the probe was deleted ...
    state = _state(check, name)
    assert first <= set(state["counted"]), state  # ... after it was saved as counted
    _books_balance(state)
    time.sleep(3.2)  # past --lost-after: a probe still pending would be declared lost now
    r = check()
    assert r.rc == 0, r
    state = _state(check, name)
    assert not first & set(state["lost"]), (state, r.stdout)
    assert state["totals"]["lost"] == 0 and state["totals"]["returned"] == 1, state


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
        r"started afresh, first probe sent, 1 in flight \| junk=0;;;0 lost=0;;;0 oldest_pending=0\.0s;120;600;0 pending=1;;;0"
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
    genuine = probe_format.new_probe(name, now - 5, socket.gethostname())  # as this node would send it
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
    pwfile.chmod(0o600)
    check = Checker(lab, tmp_path, MONITOR, None, "imaps", "submission",
                    "--smtp-user", MONITOR, "--smtp-password-file", str(pwfile), "-vvv")
    outputs = []
    for _ in range(2):
        r = check()
        assert r.rc == 0, r
        outputs.append(r.stdout + r.stderr)
        lab.wait_for(MONITOR, 1)
    assert re.search(r"(?m)^IMAP C: \w+ LOGIN %s \*\*\*\*$" % re.escape(MONITOR), outputs[0]), outputs[0][:3000]
    assert re.search(r"(?i)auth plain \*\*\*\*", outputs[0]), outputs[0][:3000]
    assert os.stat(check.state_dir).st_mode & 0o777 == 0o700
    for name in os.listdir(check.state_dir):
        st = os.stat(os.path.join(check.state_dir, name))
        assert st.st_mode & 0o777 == 0o600, name
        with open(os.path.join(check.state_dir, name), "rb") as f:
            assert lab.users[MONITOR].encode() not in f.read(), name
    password = lab.users[MONITOR]
    forms = {
        "password": password,
        "base64 of the password": base64.b64encode(password.encode()).decode(),
        "base64 of the AUTH PLAIN response": base64.b64encode(
            b"\0" + MONITOR.encode() + b"\0" + password.encode()).decode(),
    }
    for out in outputs:
        for what, text in forms.items():
            assert text not in out, "%s in the -vvv output" % what


# -- 7. mail system faults over consecutive runs ------------------------------
#
# --no-junk with probes filed as spam (a stall, then a loss, the probes left in
# Junk) is proven in memory (tests/test_mem_junk.py); that --no-junk leaves the
# Junk folder alone on the real server, in tests/test_junk.py.
