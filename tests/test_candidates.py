"""Which candidates a run reads (lib/check_mail_roundtrip/candidates.py): pure, no lab.

The lab tests in tests/test_imap_candidates.py run the same rules against Dovecot; here a
model mailbox of UIDs runs them through many orders of floods, probes and runs.
"""

from hypothesis import given, settings, strategies as st

from check_mail_roundtrip.candidates import (
    MAX_BACKLOG,
    backlog,
    choose,
    newest,
    uid_set,
    unexamined,
    valid_backlog,
    wanted_criteria,
)


def test_the_uid_set_holds_the_backlog_and_all_above_the_floor():
    assert uid_set(0, []) == "1:*"
    assert uid_set(900, [[3, 7], [12, 12]]) == "3:7,12,901:*"
    assert unexamined(901, 900, [[3, 7]]) and unexamined(5, 900, [[3, 7]])
    assert not unexamined(900, 900, [[3, 7]]) and not unexamined(8, 900, [[3, 7]])


def test_wanted_ids_are_searched_for_with_the_key_in_one_or_chain():
    assert wanted_criteria("MRTP1.abc", ["p1"]) == ["SUBJECT", "MRTP1.abc.p1"]
    assert wanted_criteria("MRTP1.abc", ["p1", "p2", "p3"]) == [
        "OR", "OR", "SUBJECT", "MRTP1.abc.p1", "SUBJECT", "MRTP1.abc.p2", "SUBJECT", "MRTP1.abc.p3"]
    assert wanted_criteria("MRTP1.abc", ["p%d" % i for i in range(500)]).count("SUBJECT") == 100


def test_a_wanted_candidate_is_read_first_then_the_newest():
    assert choose(range(1, 11), {2}, 4) == [2, 8, 9, 10]
    assert choose(range(1, 11), set(), 4) == [7, 8, 9, 10]
    assert choose(range(1, 4), {2, 99}, 4) == [1, 2, 3]     # all fit; 99 is no candidate
    assert choose(range(1, 11), set(range(1, 11)), 3) == [8, 9, 10]


def test_what_is_not_read_is_remembered_as_ranges_without_a_read_one_inside():
    assert backlog([1, 2, 3, 5, 8, 9, 10], [5, 9, 10]) == [[1, 3], [8, 8]]
    assert backlog([1, 2], [1, 2]) == []
    assert backlog(range(1, 100, 2), range(1, 100, 4), limit=3) == [[3, 91], [95, 95], [99, 99]]
    many = backlog(range(1, 100), range(1, 100, 2), limit=5)
    assert len(many) == 5 and many[0][0] == 2 and many[-1] == [98, 98]  # the oldest joined, none dropped
    # a range never spans what was examined before: 1 and 22 were left, 2 to 21 were read
    assert backlog([1, 22, 40], [40], [[1, 1]]) == [[1, 1], [22, 22]]
    assert valid_backlog(many) and not valid_backlog([[3, 2]]) and not valid_backlog([[1, True]])


def test_newest_keeps_the_last_and_says_so():
    notes = []
    assert newest(list("abcde"), 2, notes, "messages") == ["d", "e"]
    assert notes == ["5 messages; reading the newest 2 this run, the older ones in the next runs"]
    assert newest(list("ab"), 2, notes, "messages") == ["a", "b"] and len(notes) == 1


LIMIT = 20  # a run's share in the model (MAX_READ in the collectors)


def _run(mailbox, memory, wanted):
    """One run on the model *mailbox* ({uid: genuine?}); the UIDs read."""
    floor, old = memory["floor"], memory["backlog"]
    found = {u for u in mailbox if unexamined(u, floor, old)}
    hits = {u for u in found if mailbox[u] in wanted}
    read = choose(found, hits, LIMIT) if len(found) > LIMIT else sorted(found)
    memory["floor"] = max([floor] + list(found))
    memory["backlog"] = backlog(found, read, old)
    return read


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 60), st.booleans()), min_size=1, max_size=30))
def test_a_genuine_probe_is_read_in_its_first_run_and_no_forged_candidate_twice(runs):
    """Each step: *n* forged candidates arrive, maybe a genuine probe among them (at a random
    place), then a run.  The probe is read in the first run after it arrived; a forged
    candidate is read at most once; the memory stays within MAX_BACKLOG ranges; once the
    flood stops every candidate is read within a bounded number of runs."""
    mailbox, memory, read_before, uid = {}, {"floor": 0, "backlog": []}, set(), 0
    for i, (n, with_probe) in enumerate(runs):
        where = n // 2
        for k in range(n + with_probe):
            uid += 1
            mailbox[uid] = "probe%d" % i if with_probe and k == where else None
        wanted = {"probe%d" % i} if with_probe else set()
        read = set(_run(mailbox, memory, wanted))
        if with_probe:
            probe_uid, = [u for u, g in mailbox.items() if g == "probe%d" % i]
            assert probe_uid in read
            del mailbox[probe_uid]  # counted and removed
        assert len(read) <= LIMIT and len(memory["backlog"]) <= MAX_BACKLOG
        if i < MAX_BACKLOG // 2:  # a run adds two ranges at most: none joined yet, nothing read twice
            assert not read & read_before
        read_before |= read
    for _ in range(len(mailbox) // LIMIT + MAX_BACKLOG + 1):
        read_before |= set(_run(mailbox, memory, set()))
    assert set(mailbox) <= read_before and memory["backlog"] == []
