"""The mail_roundtrip_report command: options, then the page (and badge, and merged CSV) written atomically.

Exit codes: 0 the files were written; 1 nothing could be reported (the state
directory is missing or cannot be read, holds no profile, a --profile named
is not there: no file is written) or a file could not be written (it is left
as it was), with one line on stderr saying why; 2 a usage error (argparse's).
"""

from __future__ import annotations

import argparse
import calendar
import gc
import heapq
import math
import os
import sys
import time
from collections.abc import Iterator
from typing import BinaryIO, Callable, Optional

from . import __version__
from .badge import badge
from .history_read import HEADER, History, HistoryError, fields_of, read_history, sent_text
from .report_html import Section, page
from .report_profiles import Profile, ReportError, find_profiles
from .report_stats import Thresholds, summarise, verdict
from .report_text import percent, seconds
from .state import replace_with

PROG = "mail_roundtrip_report"
DEFAULT_WARNING, DEFAULT_CRITICAL = 120.0, 600.0
BADGE_LABEL = "mail round trip"
OUTPUT_MODE = 0o644  # the page is for a web server to serve
EX_OK, EX_FAIL = 0, 1
_RANK = {"red": 0, "amber": 1, "green": 2, "grey": 3}


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError("must be a number of seconds above 0: %r" % text)
    return value


def _time(text: str) -> float:
    """A UTC date (2026-12-01) or time (2026-12-01T08:00, seconds and a Z optional) as epoch seconds."""
    for form in ("%Y-%m-%d", "%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"):
        try:
            return float(calendar.timegm(time.strptime(text.rstrip("Z"), form)))
        except ValueError:
            continue
    raise argparse.ArgumentTypeError("must be a UTC date like 2026-12-01 or time like 2026-12-01T08:00: %r" % text)


def parser() -> argparse.ArgumentParser:
    """The command's options, each explained in --help."""
    ap = argparse.ArgumentParser(
        prog=PROG,
        description="Write a static HTML report (no script, no external resource: serve it with any web server, "
                    "or open it from disk) of the round trips check_mail_roundtrip recorded in its history files: "
                    "per profile, the share of probes back within -w, within -c, later, in Junk and lost over the "
                    "last 24 hours, 7 days, 30 days and the whole history, the round trip's p50/p95/p99/max, and "
                    "charts of the day, the week and the month. All times are UTC.",
        epilog="Exit codes: 0 written; 1 nothing to report or a file could not be written (one line on stderr "
               "says why); 2 a usage error. Example, from cron as the monitoring user: "
               "%s --state-dir /var/lib/check_mail_roundtrip --output /var/www/html/mail/index.html "
               "--badge /var/www/html/mail/badge.svg" % PROG)
    ap.add_argument("--state-dir", required=True, metavar="DIR",
                    help="the check's state directory: every profile's <state file>.history.csv in it is read")
    ap.add_argument("--output", required=True, metavar="FILE",
                    help="where to write the HTML page (replaced atomically, mode 0644)")
    ap.add_argument("--badge", metavar="FILE",
                    help="also write a status badge (SVG): the last 24 hours' median round trip and share back "
                         "within -c, green, amber or red; with several profiles, the worst of them")
    ap.add_argument("--csv", metavar="FILE",
                    help="also write the merged history of the profiles reported: a 'profile' column, then the "
                         "history's columns, every probe in the order it was sent")
    ap.add_argument("-w", "--warning", type=_seconds, metavar="SECONDS",
                    help="round trip counted as 'back within -w' up to this (default: what the check last ran "
                         "with, as its state file records, else %g)" % DEFAULT_WARNING)
    ap.add_argument("-c", "--critical", type=_seconds, metavar="SECONDS",
                    help="round trip counted as 'back within -c' up to this, and 'later' beyond it (default: what "
                         "the check last ran with, else %g)" % DEFAULT_CRITICAL)
    ap.add_argument("--since", type=_time, metavar="DATE",
                    help="leave out probes sent before this UTC date or time (e.g. 2026-11-01); the 'all' row "
                         "then starts here")
    ap.add_argument("--until", type=_time, metavar="DATE",
                    help="report as of this UTC date or time instead of now: the windows end here and later "
                         "probes are left out (e.g. 2026-12-01 for November's report)")
    ap.add_argument("--profile", action="extend", nargs="+", metavar="NAME",
                    help="report only these profiles (the profile name the check shows with -v, or its state "
                         "file name without .json); default: every profile in the state directory")
    ap.add_argument("--version", action="version", version="%(prog)s " + __version__)
    return ap


def thresholds(profile: Profile, warning: Optional[float], critical: Optional[float]) -> Thresholds:
    """The thresholds for *profile*: given, else as its state file records, else the defaults; and whence."""
    chosen, whence = [], []
    for given, recorded, default in ((warning, profile.warning, DEFAULT_WARNING),
                                     (critical, profile.critical, DEFAULT_CRITICAL)):
        if given is not None:
            chosen.append(given)
            whence.append("given")
        elif recorded is not None:
            chosen.append(recorded)
            whence.append("as the check last ran")
        else:
            chosen.append(default)
            whence.append("default")
    source = whence[0] if whence[0] == whence[1] else "-w %s, -c %s" % (whence[0], whence[1])
    return Thresholds(chosen[0], chosen[1], source)


def _section(profile: Profile, args: argparse.Namespace, now: float) -> tuple[Section, Optional[History]]:
    limits = thresholds(profile, args.warning, args.critical)
    if profile.history is None:
        return Section(profile, limits, None), None
    try:
        history = read_history(profile.history, keep_lines=bool(args.csv))
    except HistoryError as exc:
        return Section(profile, limits, None, problem="%s %s" % (profile.history, exc)), None
    summary = summarise(history, now, limits, since=args.since, until=args.until is not None)
    return Section(profile, limits, summary, history.damaged, tuple(history.examples), history.truncated), history


def badge_svg(sections: list[Section]) -> str:
    """The badge of the worst profile's last 24 hours."""
    graded = []
    for sec in sections:
        day = sec.summary.windows[0] if sec.summary is not None else None
        colour = verdict(day, sec.limits) if day is not None and not sec.problem else "grey"
        share = (day.within_w + day.within_c) / day.probes if day is not None and day.probes else 1.0
        graded.append((_RANK[colour], share, colour, day))
    _rank, _share, colour, day = min(graded, key=lambda g: (g[0], g[1]))
    if day is None or not day.probes:
        return badge(BADGE_LABEL, "no probes in 24 h", "grey")
    text = "%s \u00b7 %s" % (seconds(day.rtts[0]) if day.rtts else "lost", percent(day.within_w + day.within_c,
                                                                                      day.probes, 1))
    return badge(BADGE_LABEL, text, colour)


def _csv_field(text: str) -> str:
    """*text* as one CSV field: quoted as CSV does when it holds a comma, a quote or a line end."""
    return '"%s"' % text.replace('"', '""') if any(c in text for c in ',"\r\n') else text


def merged_lines(pairs: list[tuple[Profile, History]], since: Optional[float], until: Optional[float]) -> Iterator[str]:
    """The lines of every history, each after its profile's name, in the order the probes were sent."""
    lo = sent_text(since) if since is not None else ""
    hi = sent_text(until) if until is not None else "~"

    def one(k: int, profile: Profile, history: History) -> Iterator[tuple[str, int, str]]:
        name, sent, lines = _csv_field(profile.name), history.sent, history.lines or []
        order = None if history.columns == HEADER else [history.columns.index(c) for c in HEADER]
        for i in sorted(range(len(sent)), key=sent.__getitem__):
            if lo <= sent[i] < hi:
                line = lines[i]
                if order is not None:  # columns in another order, or more of them: the usual ones, in order
                    fields = fields_of(line)
                    line = ",".join(_csv_field(fields[j]) for j in order)
                yield sent[i], k, "%s,%s\n" % (name, line)

    yield "profile," + ",".join(HEADER) + "\n"
    for _sent, _k, line in heapq.merge(*(one(k, p, h) for k, (p, h) in enumerate(pairs))):
        yield line


def _write(path: str, fill: Callable[[BinaryIO], object]) -> None:
    try:
        replace_with(path, fill, OUTPUT_MODE)
    except OSError as exc:
        raise ReportError("cannot write %s: %s" % (path, exc.strerror or exc))


def run(args: argparse.Namespace, now: float) -> None:
    """Read the histories and write the files; ReportError when nothing can be reported."""
    profiles = find_profiles(args.state_dir, args.profile)
    built = [_section(p, args, now) for p in profiles]
    sections = [sec for sec, _h in built]
    html = page(sections, now, args.state_dir, args.since).encode("utf-8")
    for path in (args.output, args.badge, args.csv):
        if path and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            raise ReportError("cannot write %s: no directory %s" % (path, os.path.dirname(os.path.abspath(path))))
    if args.csv:
        pairs = [(sec.profile, h) for sec, h in built if h is not None]
        _write(args.csv, lambda f: f.writelines(line.encode("utf-8") for line in merged_lines(
            pairs, args.since, args.until)))
    if args.badge:
        data = badge_svg(sections).encode("utf-8")
        _write(args.badge, lambda f: f.write(data))
    _write(args.output, lambda f: f.write(html))


def main(argv: Optional[list[str]] = None, now: Optional[float] = None) -> int:
    """Run the command with *argv* as of *now* (default: --until, else the clock); the exit code."""
    args = parser().parse_args(argv)
    if args.since is not None and args.until is not None and args.since >= args.until:
        parser().error("--since must be before --until")
    when = args.until if args.until is not None else (time.time() if now is None else now)
    gc.disable()  # many small objects, no cycles: collecting would only cost time
    try:
        run(args, when)
    except ReportError as exc:
        sys.stderr.write("%s: %s\n" % (PROG, exc))
        return EX_FAIL
    finally:
        gc.enable()
    return EX_OK

