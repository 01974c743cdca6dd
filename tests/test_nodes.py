"""Several monitoring nodes run the same check on one mailbox (docs/explanation/distributed.md).

Each node has a state directory of its own; they share the secret, the
profile (--name) and the mailbox, and differ in --node.  Runs go to the
nodes in adversarial orders against the lab: alternating, one node away for
longer than --lost-after, two nodes in the same second, a node killed with
SIGKILL in the middle of its runs while the lab delays and drops mail.
Afterwards the books balance on every node, no probe was counted twice or
by a node that did not send it, and no probe that was delivered is lost.
"""

import json
import os
import re
import secrets
import threading
import time

from check_mail_roundtrip.probe import node_tag
from check_mail_roundtrip.state import file_stem
from tests.checkrun import Checker
from tests.test_reliability import _delivered_probe_ids, _log_end, _popen, _postfix_log_from, _wait_queue_empty

MONITOR = "monitor@lab.test"
PROFILE = "ha-zone"
LOST_AFTER = 4.0


class Node(Checker):
    """One monitoring node: its own state directory, the shared secret and profile."""

    def __init__(self, lab, base, name, secret):
        super().__init__(lab, base / name, MONITOR, None, "imaps", "smtp", "--name", PROFILE, "--node", name,
                         "--secret-file", secret, "-w", "2", "-c", "3", "--lost-after", str(LOST_AFTER), "-v")
        self.name = name

    def state(self):
        try:
            with open(os.path.join(self.state_dir, file_stem(PROFILE) + ".json")) as f:
                return json.load(f)
        except FileNotFoundError:
            return {"totals": {"sent": 0, "returned": 0, "lost": 0, "late": 0}, "pending": {}, "counted": {},
                    "lost": {}}


def nodes(lab, tmp_path, *names):
    secret = tmp_path / "secret"
    secret.write_text(secrets.token_hex(32) + "\n")
    os.chmod(secret, 0o600)
    return {name: Node(lab, tmp_path, name, str(secret)) for name in names}


def probes_in_mailbox(lab):
    return {m["message_id"].split(".")[0].lstrip("<") for m in lab.messages(MONITOR)
            if "MRTP1." in (m["subject"] or "")}


def settle(lab, group, states=(0,)):
    """Let the mail arrive, then one run of each node collects its own."""
    _wait_queue_empty(lab)
    time.sleep(0.3)
    for node in group.values():
        r = node()
        assert r.rc in states and "Traceback" not in r.stderr, r


def assert_books(lab, group, log_start, lost=None):
    """Books balance on every node; each counted probe is its node's; delivered probes are not lost;
    the mailbox holds exactly the probes still pending somewhere."""
    lost = lost or {}
    counted_by = {}
    pending = set()
    for name, node in group.items():
        st = node.state()
        t = st["totals"]
        assert t["sent"] == t["returned"] + len(st["pending"]) + t["lost"], (name, st)
        assert t["lost"] == lost.get(name, 0), (name, st)
        for pid in st["counted"]:
            assert pid not in counted_by, "probe %s counted by %s and %s" % (pid, counted_by[pid], name)
            counted_by[pid] = name
        pending |= set(st["pending"])
    delivered = _delivered_probe_ids(_postfix_log_from(lab, log_start))
    for name, node in group.items():
        assert not delivered & set(node.state()["lost"]), (name, "a delivered probe was declared lost")
    _wait_queue_empty(lab)
    time.sleep(0.2)
    assert probes_in_mailbox(lab) <= pending, (probes_in_mailbox(lab), pending)


def test_failover_back_and_forth_and_a_node_away_for_longer_than_lost_after(lab, tmp_path):
    group = nodes(lab, tmp_path, "alpha", "beta", "gamma")
    log_start = _log_end(lab)
    others = 0
    for step in "aabababbcacbaab":
        r = group[{"a": "alpha", "b": "beta", "c": "gamma"}[step]]()
        assert r.rc == 0, r  # no false loss, no stall: every node sees its own probes come back
        others += len(re.findall(r"was sent by another node \(tag \w+\): left for it", r.stdout))
        time.sleep(0.15)
    assert others >= 5  # the nodes did see each other's probes, and left them
    # gamma stays away for longer than --lost-after while the others go on
    t_away = time.monotonic()
    while time.monotonic() - t_away < LOST_AFTER + 1.5:
        for name in ("alpha", "beta"):
            assert group[name]().rc == 0
        time.sleep(0.5)
    r = group["gamma"]()
    assert r.rc == 0 and "declared lost" not in r.stdout, r  # its probe waited for it in the mailbox
    assert re.search(r"^probe \w+ returned, round trip", r.stdout, re.M), r.stdout
    settle(lab, group)
    assert_books(lab, group, log_start)


def test_nodes_running_in_the_same_second(lab, tmp_path):
    group = nodes(lab, tmp_path, "alpha", "beta")
    log_start = _log_end(lab)
    for _ in range(6):
        procs = [_popen(node) for node in group.values()]
        outs = [p.communicate(timeout=60) for p in procs]
        for p, (out, err) in zip(procs, outs):
            assert p.returncode == 0, (out, err)
        time.sleep(0.3)
    settle(lab, group)
    assert_books(lab, group, log_start)


def test_a_node_killed_mid_run_while_mail_is_delayed_and_dropped(lab, tmp_path):
    group = nodes(lab, tmp_path, "alpha", "beta")
    alpha, beta = group["alpha"], group["beta"]
    log_start = _log_end(lab)
    t0 = time.monotonic()
    assert alpha().rc == 0
    run_time = time.monotonic() - t0  # the kills spread over a whole run
    assert beta().rc == 0
    killed = 0
    for i in range(12):
        if i == 4:
            lab.delay(1)
        if i == 8:
            lab.release()  # no more delay; what is held goes out now
        p = _popen(alpha)
        time.sleep(run_time * (0.1 + 0.06 * i))
        p.kill()
        p.communicate(timeout=30)
        killed += p.returncode == -9
        r = beta()
        assert r.rc == 0 or "in flight for" in r.line, r  # a delayed probe may be out longer than -w
    assert killed >= 6
    # beta's next probe is dropped by the mail system: a real loss, reported once, by beta alone
    lab.drop()
    r = beta()
    dropped = re.search(r"^probe (\w+) sent", r.stdout, re.M).group(1)
    lab.delay(0)
    _wait_queue_empty(lab)
    t_dropped = time.monotonic()
    settle(lab, group)
    while time.monotonic() - t_dropped < LOST_AFTER + 0.5:
        time.sleep(0.2)
    threads = [threading.Thread(target=node) for node in group.values()]  # the last runs, together
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    r = beta()
    assert dropped in beta.state()["lost"], r
    # what a killed alpha run recorded but never handed to Postfix is forgotten, not lost
    assert_books(lab, group, log_start, lost={"beta": 1})


TAKEOVER_EVERY = 1.0    # seconds between node alpha's runs (5 s in the field)
TAKEOVER_RUNS = 7       # alpha's runs while beta waits (35 s in the field)
STALE = 4.0             # beta's --stale-warning: below the time since its own last success


def test_a_node_taking_over_is_not_stale_when_the_other_nodes_probes_arrived(lab, tmp_path):
    """beta runs once; alpha runs every second for seven seconds with mail flowing; then beta
    takes over with --stale-warning 4. beta's own last success is seven seconds old, but
    alpha's last probe, left in the mailbox for alpha, arrived a moment ago: mail flows. beta
    is OK, its since_last_success continues alpha's (small), its rtt is its own probe's, and
    alpha's probe is still there for alpha."""
    group = nodes(lab, tmp_path, "alpha", "beta")
    alpha, beta = group["alpha"], group["beta"]
    assert beta().rc == 0
    t_beta = time.monotonic()
    for _ in range(TAKEOVER_RUNS):
        r = alpha()
        assert r.rc == 0, r
        time.sleep(max(0.0, TAKEOVER_EVERY - r.seconds))
    t_alpha = time.monotonic()
    last_of_alpha = re.search(r"^probe (\w+) sent", r.stdout, re.M).group(1)
    _wait_queue_empty(lab)
    lab.wait_for(MONITOR, lambda msgs: last_of_alpha in probes_in_mailbox(lab))
    assert time.monotonic() - t_beta > STALE + 2
    r = beta("--stale-warning", str(STALE))
    line = r.full_line
    assert r.rc == 0 and re.fullmatch(
        r"MAIL_ROUNDTRIP OK - round trip (\d+\.\d+)s, 1 in flight, last success \ds ago \| junk=0;;;0 lost=0;;;0 "
        r"oldest_pending=0\.0s;2;3;0 pending=1;;;0 rtt=\1s;2;3;0 since_last_success=(\d+\.\d+)s;%g;;0" % STALE,
        line), r
    since = r.perf["since_last_success"]
    assert since <= time.monotonic() - t_alpha + TAKEOVER_EVERY + 1, (since, r)  # continues alpha's
    own = re.search(r"^probe (\w+) returned, round trip (\d+\.\d+)s$", r.stdout, re.M)
    assert own.group(1).startswith(node_tag("beta")) and own.group(1) in beta.state()["counted"]
    assert r.perf["rtt"] == float(own.group(2))  # its own round trip, not alpha's
    assert re.search(r"^last success: probe %s of node %s arrived \d+\.\ds ago, round trip \d+\.\d{3}s "
                     r"\(its sender counts it\)$" % (last_of_alpha, last_of_alpha[:4]), r.stdout, re.M), r.stdout
    assert last_of_alpha in probes_in_mailbox(lab) and last_of_alpha not in beta.state()["counted"]
    r = alpha()  # alpha comes back: its probe waited for it
    assert r.rc == 0 and re.search(r"^probe %s returned" % last_of_alpha, r.stdout, re.M), r
