"""A probe filed as spam is found in the Junk folder, counted, and reported.

Against the lab's real Dovecot: its Junk folder carries the \\Junk attribute
(SPECIAL-USE); its IMAP on 127.0.0.3 (lab.PLAIN_HOST) announces neither
SPECIAL-USE nor IDLE, and the junk fault files mail into any folder.  What
--junk-state makes of a probe in Junk (warning, critical, ok) is proven with
whole status lines in memory (tests/test_mem_junk.py).
"""

import json
import os
import re

from tests import faultservers as fs
from tests.checkrun import Checker
from tests.lab.common import PLAIN_HOST

MONITOR = "monitor@lab.test"
PERF_JUNK = r"junk=1;;;0 lost=0;;;0 oldest_pending=0\.0s;120;600;0 pending=1;;;0 rtt=(\d+\.\d+)s;120;600;0 since_last_success=\d+\.\d+s;;;0"


def _probes(lab, folder):
    return [m for m in lab.messages(MONITOR, folder) if "MRTP1." in m["subject"]]


def _first_probe_into_junk(lab, check, folder="Junk"):
    lab.junk(folder=folder)
    r = check()
    assert r.rc == 0 and "first probe sent" in r.line, r
    lab.wait_for(MONITOR, 1, folder=folder)
    lab.junk(False)


def test_a_probe_filed_as_junk_is_a_round_trip_reported_at_warning_and_removed_from_junk(lab, tmp_path):
    check = Checker(lab, tmp_path)
    lab.junk()
    lab.send(subject="a real spam", sender="other@lab.test")
    _first_probe_into_junk(lab, check)
    lab.wait_for(MONITOR, 2, folder="Junk")
    r = check("-v")
    assert r.rc == 1, r
    m = re.fullmatch(r"MAIL_ROUNDTRIP WARNING - probe delivered to Junk, round trip (\d+\.\d+)s, 1 in flight, "
                     r"last success \d+s ago \| " + PERF_JUNK, r.full_line)
    assert m and m.group(1) == m.group(2), r.full_line
    assert re.search(r'^probe \w+ found in the Junk folder \(UID \d+ in "Junk"\)$', r.stdout, re.M), r.stdout
    assert [m["subject"] for m in lab.messages(MONITOR, "Junk")] == ["a real spam"]  # only ours removed
    lab.wait_for(MONITOR, 1)
    r = check()
    assert r.rc == 0 and r.line.startswith("MAIL_ROUNDTRIP OK - round trip "), r  # back in INBOX: OK again
    assert "junk=0;;;0 lost=0;;;0" in r.line


def test_probes_in_junk_and_inbox_are_both_counted(lab, tmp_path):
    check = Checker(lab, tmp_path)
    _first_probe_into_junk(lab, check)
    r = check("--no-junk")  # does not see the probe in Junk; the next one goes to INBOX
    assert r.rc == 0 and "no probe back this run, oldest in flight" in r.line and "junk=" not in r.line, r
    lab.wait_for(MONITOR, 1)
    r = check()
    assert r.rc == 1, r
    assert re.match(r"MAIL_ROUNDTRIP WARNING - probe delivered to Junk, 2 round trips, slowest \d+\.\d+s, "
                    r"1 in flight, last success \d+s ago \| junk=1;;;0 ", r.line), r.line
    assert not _probes(lab, "Junk") and len(_probes(lab, "INBOX")) <= 1


def test_with_keep_both_folders_are_examined_and_nothing_is_removed(lab, tmp_path):
    check = Checker(lab, tmp_path)
    _first_probe_into_junk(lab, check)
    r = check("--keep", "-vvv")
    assert r.rc == 1 and "probe delivered to Junk" in r.line, r
    assert re.search(r'^IMAP C: \S+ EXAMINE "Junk"$', r.stdout, re.M), r.stdout
    assert re.search(r'^IMAP C: \S+ EXAMINE "INBOX"$', r.stdout, re.M), r.stdout
    assert not re.search(r"^IMAP C: \S+ (SELECT|UID STORE|UID EXPUNGE)", r.stdout, re.M), r.stdout
    assert len(_probes(lab, "Junk")) == 1


def test_steady_state_costs_one_select_and_one_search_more_and_no_list(lab, tmp_path):
    check = Checker(lab, tmp_path)
    r = check("-vvv")
    assert r.rc == 0 and re.search(r'^IMAP C: \S+ LIST \(SPECIAL-USE\) "" "\*"$', r.stdout, re.M), r.stdout
    assert 'Junk folder: "Junk"' in r.stdout
    for junk in (True, False):
        lab.wait_for(MONITOR, 1)
        r = check("-vvv", *(() if junk else ("--no-junk",)))
        assert r.rc == 0 and r.line.startswith("MAIL_ROUNDTRIP OK - round trip "), r
        commands = re.findall(r"^IMAP C: \S+ ((?:UID )?[A-Z]+)", r.stdout, re.M)
        assert "LIST" not in commands, commands  # the Junk folder's name is remembered
        if junk:
            assert commands.count("SELECT") == 2 and commands.count("UID SEARCH") == 2, commands
            assert re.search(r'^IMAP C: \S+ SELECT "Junk"\n(IMAP S: .*\n)+IMAP C: \S+ UID SEARCH ', r.stdout, re.M)
        else:
            assert commands.count("SELECT") == 1 and commands.count("UID SEARCH") == 1, commands
        # the probe in INBOX only (-v: and its Received fields, for its hop lines)
        assert commands.count("UID FETCH") == 2, commands
        assert len(re.findall(r"^IMAP C: \S+ UID FETCH \d+ \(INTERNALDATE BODY\.PEEK\[HEADER\.FIELDS "
                              r"\(RECEIVED AUTHENTICATION-RESULTS\)\]", r.stdout, re.M)) == 1, commands


def _age_the_junk_look_up(check, seconds):
    """Make the remembered Junk look-up *seconds* older (time passing, for the state file)."""
    for name in os.listdir(check.state_dir):
        if name.endswith(".json"):
            path = os.path.join(check.state_dir, name)
            with open(path) as f:
                state = json.load(f)
            state["collector"]["junk"]["looked"] -= seconds
            with open(path, "w") as f:
                json.dump(state, f)


def test_a_server_without_special_use_has_its_junk_folder_found_by_name_once_it_exists(lab, tmp_path):
    lab.delete_folder(MONITOR, "Junk")
    check = Checker(lab, tmp_path, MONITOR, None, "imaps", "smtp", "--imap-host", PLAIN_HOST)
    lab.junk(folder="Spam")
    r = check("-vvv")
    assert r.rc == 0 and "first probe sent" in r.line, r
    assert "no Junk folder found" in r.stdout, r.stdout  # the filter makes "Spam" with the first spam
    assert "SPECIAL-USE" not in "".join(re.findall(r"^IMAP C: .*$", r.stdout, re.M))
    lab.wait_for(MONITOR, 1, folder="Spam")
    lab.junk(False)
    r = check("-vvv")  # "none" is believed for a few minutes: no LIST
    assert r.rc == 0 and "junk=0;;;0" in r.full_line and "no probe back this run" in r.line, r
    assert not re.search(r"^IMAP C: \S+ LIST", r.stdout, re.M), r.stdout
    _age_the_junk_look_up(check, 301)
    lab.wait_for(MONITOR, 1)
    r = check("-v")
    assert 'Junk folder: "Spam"' in r.stdout, r.stdout
    assert r.rc == 1 and r.line.startswith("MAIL_ROUNDTRIP WARNING - probe delivered to Junk, 2 round trips"), r
    assert re.search(r'^probe \w+ found in the Junk folder \(UID \d+ in "Spam"\)$', r.stdout, re.M), r.stdout


def test_the_name_fallback_finds_spam_once_it_is_looked_up(lab, tmp_path):
    lab.delete_folder(MONITOR, "Junk")
    lab.junk(folder="Spam")
    lab.send(subject="makes the Spam folder", sender="other@lab.test")
    lab.wait_for(MONITOR, 1, folder="Spam")
    check = Checker(lab, tmp_path, MONITOR, None, "imaps", "smtp", "--imap-host", PLAIN_HOST)
    r = check("-v")
    assert r.rc == 0 and 'Junk folder: "Spam"' in r.stdout, r
    lab.wait_for(MONITOR, 2, folder="Spam")
    lab.junk(False)
    r = check("-v")
    assert r.rc == 1 and r.line.startswith("MAIL_ROUNDTRIP WARNING - probe delivered to Junk, round trip "), r
    assert [m["subject"] for m in lab.messages(MONITOR, "Spam")] == ["makes the Spam folder"]


def test_no_junk_folder_and_a_missing_named_one_are_no_error(lab, tmp_path):
    lab.delete_folder(MONITOR, "Junk")
    check = Checker(lab, tmp_path)
    r = check("-v")
    assert r.rc == 0 and "first probe sent" in r.line and "junk=0;;;0" in r.full_line, r
    assert "no Junk folder found (by the \\Junk attribute or the usual names)" in r.stdout
    r = check("-v", "--junk-folder", "Nowhere")
    assert r.rc == 0 and "junk=0;;;0" in r.full_line, r
    assert re.search(r'^Junk folder "Nowhere" not looked into: it does not open \(server: Mailbox doesn\'t exist: '
                     r'Nowhere\)$', r.stdout, re.M), r.stdout


def test_no_junk_leaves_the_junk_folder_alone_and_pop3_cannot_have_one(lab, tmp_path):
    check = Checker(lab, tmp_path)
    r = check("-vvv", "--no-junk")
    assert r.rc == 0 and "junk=" not in r.stdout, r
    assert not re.search(r'^IMAP C: \S+ (LIST|SELECT "Junk")', r.stdout, re.M), r.stdout
    r = check("--collect", "pop3", "--junk-folder", "Junk")
    assert r.rc == 3 and r.line == ("MAIL_ROUNDTRIP UNKNOWN - usage error: --junk-folder needs IMAP: POP3 sees only "
                                    "the INBOX (see --help)"), r


def _on_script(lab, tmp_path, script, *extra):
    """One run whose IMAP server is *script* (plain IMAP on loopback)."""
    check = Checker(lab, tmp_path, MONITOR, None, "imaps", "smtp", "--name", "scripted")
    with fs.FaultServer(script) as srv:
        return check("--imap-host", "127.0.0.1", "--imap-port", str(srv.port), "--imap-tls", "none", "-v", *extra)


def test_courier_layout_has_its_spam_folder_found_under_inbox(lab, tmp_path):
    script = fs.IMAPScript(folders=["INBOX", "INBOX.Sent", "INBOX.Spam", "INBOX.Trash"], capabilities="UIDPLUS")
    r = _on_script(lab, tmp_path, script, "-vvv")
    assert r.rc == 0 and "first probe sent" in r.line and "junk=0;;;0" in r.full_line, r
    assert 'Junk folder: "INBOX.Spam"' in r.stdout, r.stdout
    assert re.search(r'^IMAP C: \S+ SELECT "INBOX\.Spam"$', r.stdout, re.M), r.stdout
    # Junk, then INBOX; the first run's look for abandoned probes searches both again, INBOX first
    assert script.commands.count("SELECT") == 3 and script.commands.count("UID SEARCH") == 4, script.commands


def test_a_server_that_refuses_to_list_folders_is_no_error(lab, tmp_path):
    script = fs.IMAPScript(folders=["INBOX"], capabilities="UIDPLUS",
                           replies={"LIST": "{tag} NO [NOPERM] listing is not allowed here"})
    r = _on_script(lab, tmp_path, script)
    assert r.rc == 0 and "first probe sent" in r.line and "junk=0;;;0" in r.full_line, r
    assert ("no Junk folder looked into: the server refused to list folders ([NOPERM] listing is not allowed here)"
            in r.stdout), r.stdout
