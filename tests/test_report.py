"""The mail_roundtrip_report command, run as a person runs it (a subprocess of the checkout's
command): the page, badge and merged CSV it writes from the check's history files, its exit codes
and its one-line messages for what cannot be reported, never a traceback."""

import os
import re
import stat

import pytest

from tests.histories import KNOWN_PROFILE, KNOWN_STEM, KNOWN_UNTIL, known, probe, write, write_state
from tests.report_page import figures, overview, report

NOW = "2026-11-30T00:53:20"
T = 1796000000.0


@pytest.fixture
def state(tmp_path):
    directory = tmp_path / "state"
    directory.mkdir(mode=0o700)
    return directory


def run_known(state, tmp_path, *extra):
    known(str(state))
    out = tmp_path / "report.html"
    r = report("--state-dir", str(state), "--output", str(out), "--until", KNOWN_UNTIL, *extra)
    assert (r.returncode, r.stdout, r.stderr) == (0, "", ""), r
    return out.read_text()


def test_the_page_shows_the_known_shares_and_percentiles_with_the_thresholds_the_check_ran_with(state, tmp_path):
    html = run_known(state, tmp_path)
    f = figures(html)
    assert [f["24 h"][k] for k in ("probes", "within_w", "within_c", "later", "junk", "lost",
                                   "p50", "p95", "p99", "max")] == [
        "106", "28.30 %30", "56.60 %60", "10.38 %11", "0.00 %0", "4.72 %5", "51.0 s", "96.0 s", "100 s", "1.1 h"]
    assert [f["7 d"][k] for k in ("probes", "within_w", "within_c", "later", "junk", "lost", "p50", "p95", "p99")] == [
        "120", "33.33 %40", "50.00 %60", "9.17 %11", "3.33 %4", "4.17 %5", "44.0 s", "96.0 s", "100 s"]
    assert [f["all"][k] for k in ("probes", "later", "p99")] == ["121", "9.92 %12", "700 s"]
    assert "thresholds -w 30 s, -c 90 s (as the check last ran)" in html
    assert overview(html) == [[KNOWN_PROFILE, "bad", "106", "84.91 %", "51.0 s", "96.0 s", "5", "0"]]


def test_thresholds_given_on_the_command_line_count_instead(state, tmp_path):
    html = run_known(state, tmp_path, "-w", "60", "-c", "4000")
    f = figures(html)["24 h"]
    assert [f[k] for k in ("within_w", "within_c", "later")] == ["56.60 %60", "38.68 %41", "0.00 %0"]
    assert "thresholds -w 60 s, -c 4000 s (given)" in html


def test_the_page_is_one_static_file_with_nothing_from_outside(state, tmp_path):
    html = run_known(state, tmp_path)
    assert html.startswith("<!DOCTYPE html>")
    assert not re.search(r"<script|<link|<img|<iframe|@import|url\((?!#)|src=|href=\"(?!#)", html, re.I)
    assert re.findall(r"https?://[^\"' ]+", html) == ["http://www.w3.org/2000/svg"] * 3  # the SVG namespace
    assert html.count("<svg") == 3
    assert stat.S_IMODE(os.stat(tmp_path / "report.html").st_mode) == 0o644


def test_the_tables_list_the_slowest_probes_and_the_runs_of_lost_ones(state, tmp_path):
    html = run_known(state, tmp_path)
    slowest = html.split("The slowest probes of the last 30 days", 1)[1].split("</table>", 1)[0]
    assert re.findall(r"<td>([^<]+)</td>", slowest)[:3] == ["1.1 h", "\u2013", "100 s"]
    lost = html.split("Lost probes of the last 30 days", 1)[1].split("</table>", 1)[0]
    assert re.findall(r"<td[^>]*>([^<]+)</td>", lost) == ["2026-11-29 18:54:20", "2026-11-29 18:58:20", "5"]


def test_the_badge_shows_the_median_and_the_share_back_within_c_of_the_last_24_hours(state, tmp_path):
    run_known(state, tmp_path, "--badge", str(tmp_path / "badge.svg"))
    svg = (tmp_path / "badge.svg").read_text()
    assert "<title>mail round trip: 51.0 s \u00b7 84.9 %</title>" in svg
    assert 'fill="#d23f31"' in svg  # red: under 95 % back within -c


def test_the_merged_csv_has_the_profile_first_and_every_probe_in_the_order_sent(state, tmp_path):
    write(str(state / "b-0000000001.history.csv"), [probe(T - 7200, 1.5, probe_id="b1"),
                                                     probe(T - 60, 2.5, probe_id="b2")])
    write(str(state / "a-0000000002.history.csv"), [probe(T - 3600, None, probe_id="a1"),
                                                     probe(T - 86400 * 3, 3.5, probe_id="a0")])
    write_state(str(state / "a-0000000002.json"), "a, the first")
    r = report("--state-dir", str(state), "--output", str(tmp_path / "r.html"), "--csv", str(tmp_path / "all.csv"),
               "--until", NOW, "--since", "2026-11-28")
    assert r.returncode == 0, r
    assert (tmp_path / "all.csv").read_text().splitlines() == [
        "profile,sent_utc,arrived_utc,rtt_s,outcome,folder,leg_out_s,leg_back_s,node,probe_id",
        "b-0000000001,2026-11-29T22:53:20.000Z,2026-11-29T22:53:21.500Z,1.500,returned,INBOX,,,,b1",
        '"a, the first",2026-11-29T23:53:20.000Z,,,lost,,,,,a1',
        "b-0000000001,2026-11-30T00:52:20.000Z,2026-11-30T00:52:22.500Z,2.500,returned,INBOX,,,,b2",
    ]


def test_the_merged_csv_keeps_the_usual_columns_of_a_history_that_has_more(state, tmp_path):
    with open(str(state / "c-0000000009.history.csv"), "w") as fh:
        fh.write("probe_id,outcome,rtt_s,sent_utc,arrived_utc,folder,leg_out_s,leg_back_s,node,extra\n")
        fh.write('z9,junk,4.500,2026-11-30T00:53:20.000Z,2026-11-30T00:53:24.500Z,"Spam, old",,,n1,x\n')
    r = report("--state-dir", str(state), "--output", str(tmp_path / "r.html"), "--csv", str(tmp_path / "all.csv"))
    assert r.returncode == 0, r
    assert (tmp_path / "all.csv").read_text().splitlines()[1:] == [
        'c-0000000009,2026-11-30T00:53:20.000Z,2026-11-30T00:53:24.500Z,4.500,junk,"Spam, old",,,n1,z9']


def test_profile_picks_profiles_by_name_or_state_file_name(state, tmp_path):
    known(str(state))
    write(str(state / "other-0000000003.history.csv"), [probe(T - 60, 1.0)])
    for name in (KNOWN_PROFILE, KNOWN_STEM):
        r = report("--state-dir", str(state), "--output", str(tmp_path / "r.html"), "--until", NOW, "--profile", name)
        assert r.returncode == 0, r
        html = (tmp_path / "r.html").read_text()
        assert [row[0] for row in overview(html)] == [KNOWN_PROFILE]


def test_a_profile_not_there_is_named_with_those_that_are(state, tmp_path):
    known(str(state))
    r = report("--state-dir", str(state), "--output", str(tmp_path / "r.html"), "--profile", "nope")
    assert (r.returncode, r.stdout) == (1, ""), r
    assert r.stderr == "mail_roundtrip_report: no profile 'nope' in state directory %s; there are: %r\n" % (
        state, KNOWN_PROFILE)
    assert not (tmp_path / "r.html").exists()


def test_a_missing_state_directory_is_one_line_and_exit_1(tmp_path):
    r = report("--state-dir", str(tmp_path / "nowhere"), "--output", str(tmp_path / "r.html"))
    assert (r.returncode, r.stdout, r.stderr) == (1, "", "mail_roundtrip_report: state directory %s does not exist "
                                                         "(give the check's --state-dir)\n" % (tmp_path / "nowhere"))


def test_an_empty_state_directory_is_one_line_and_exit_1(state, tmp_path):
    (state / "secret").write_text("x")
    r = report("--state-dir", str(state), "--output", str(tmp_path / "r.html"))
    assert (r.returncode, r.stdout, r.stderr) == (1, "", (
        "mail_roundtrip_report: no history in state directory %s: no profile has run there with a check that "
        "keeps a history (--history-days above 0)\n" % state))
    assert not (tmp_path / "r.html").exists()


def test_a_profile_with_no_probes_yet_has_a_page_that_says_so(state, tmp_path):
    write_state(str(state / "fresh-0000000004.json"), "fresh profile")
    write(str(state / "empty-0000000005.history.csv"), [])
    r = report("--state-dir", str(state), "--output", str(tmp_path / "r.html"), "--badge", str(tmp_path / "b.svg"))
    assert (r.returncode, r.stderr) == (0, ""), r
    html = (tmp_path / "r.html").read_text()
    assert overview(html) == [["empty-0000000005", "no probes", "no probes yet"],
                              ["fresh profile", "no probes", "no probes yet"]]
    assert html.count("No probes recorded yet: the check has not settled a probe of this profile.") == 2
    assert "<title>mail round trip: no probes in 24 h</title>" in (tmp_path / "b.svg").read_text()


def test_damaged_lines_are_skipped_and_the_page_counts_them(state, tmp_path):
    write(str(state / "p-0000000006.history.csv"), [probe(T - 60, 1.0), "torn,line", probe(T - 30, None),
                                                    probe(T - 20, 2.0).replace("returned", "bounced")])
    r = report("--state-dir", str(state), "--output", str(tmp_path / "r.html"), "--until", NOW)
    assert r.returncode == 0, r
    html = (tmp_path / "r.html").read_text()
    assert ("2 damaged lines skipped (line 3: 2 fields, not 9; line 5: outcome &#x27;bounced&#x27; is none of "
            "returned, junk, lost, late)") in html
    assert figures(html)["24 h"]["probes"] == "2"


def test_a_history_that_cannot_be_read_is_named_on_the_page(state, tmp_path):
    (state / "dir-0000000007.history.csv").mkdir()
    os.symlink("/etc/passwd", str(state / "link-0000000008.history.csv"))
    r = report("--state-dir", str(state), "--output", str(tmp_path / "r.html"))
    assert r.returncode == 0, r
    html = (tmp_path / "r.html").read_text()
    assert "The history could not be read: %s/link-0000000008.history.csv is a symlink (not followed)." % state in html
    assert "The history could not be read: %s/dir-0000000007.history.csv " % state in html
    assert "root:" not in html


def test_an_output_that_cannot_be_written_is_one_line_and_exit_1(state, tmp_path):
    known(str(state))
    r = report("--state-dir", str(state), "--output", str(tmp_path / "no" / "r.html"))
    assert (r.returncode, r.stdout, r.stderr) == (1, "", "mail_roundtrip_report: cannot write %s: no directory %s\n" % (
        tmp_path / "no" / "r.html", tmp_path / "no"))


@pytest.mark.parametrize("args, words", [
    (["-w", "0"], "argument -w/--warning: must be a number of seconds above 0: '0'"),
    (["--since", "yesterday"], "argument --since: must be a UTC date like 2026-12-01 or time like "
                               "2026-12-01T08:00: 'yesterday'"),
    (["--since", "2026-12-01", "--until", "2026-11-01"], "--since must be before --until"),
])
def test_usage_errors_exit_2_with_argparse_words(state, tmp_path, args, words):
    r = report("--state-dir", str(state), "--output", str(tmp_path / "r.html"), *args)
    assert r.returncode == 2, r
    assert r.stderr.splitlines()[-1] == "mail_roundtrip_report: error: " + words


def test_help_explains_every_option():
    r = report("--help")
    assert r.returncode == 0
    text = " ".join(r.stdout.split())
    for option in ("--state-dir DIR", "--output FILE", "--badge FILE", "--csv FILE", "-w SECONDS",
                   "-c SECONDS", "--since DATE", "--until DATE", "--profile NAME"):
        assert option in text, option
    assert "Exit codes: 0 written; 1 nothing to report or a file could not be written" in text
