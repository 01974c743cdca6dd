"""Several monitoring nodes run the same check on one mailbox (docs/explanation/distributed.md).

Each node has a state directory of its own; they share the secret, the
profile (--name) and the mailbox, and differ in --node.  Against the lab, what
takes real processes and a real mail system: two nodes in the same second, a
node killed with SIGKILL in the middle of its runs while the lab delays and
drops mail.  Afterwards the books balance on every node, no probe was counted
twice or by a node that did not send it, and no probe that was delivered is
lost.  The orders of runs (alternating, one node away for longer than
--lost-after, any order) and a node taking over after the other's runs are
proven in memory with whole status lines (tests/test_mem_nodes.py).
"""

import json
import os
import re
import secrets
import threading
import time

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
