"""The report as one static HTML page: no script, no external resource, CSS inline, printable.

An overview of the last 24 hours of every profile, then a section per
profile: its delivery shares and round trips over 24 hours, 7 days, 30 days
and the whole history; the charts of the day, the week and the month
(:mod:`report_svg`); the slowest probes and the losses of the last 30 days.
A profile without probes, or whose history could not be read, has a section
that says so.  Every text that comes from a file is escaped.
"""

from __future__ import annotations

from html import escape
from typing import Optional

from . import __version__
from .history_read import LATE, epoch
from .record import record
from .report_profiles import Profile
from .report_stats import Summary, Thresholds, Window, verdict
from .report_svg import day_chart, month_chart, week_chart
from .report_text import DASH, count, percent, seconds, threshold, utc, utc_time

TITLE = "Mail round trip report"
VERDICT_WORDS = {"green": "good", "amber": "degraded", "red": "bad", "grey": "no probes"}
SHARES = (("within_w", "w"), ("within_c", "c"), ("later", "later"), ("junk", "junk"), ("lost", "lost"))
CSS = """
body{font-family:"DejaVu Sans",Verdana,Arial,sans-serif;font-size:14px;color:#222;margin:1.5em auto;max-width:1000px;
padding:0 1em;background:#fff}
h1{font-size:1.6em;margin:0 0 .2em}h2{font-size:1.25em;margin:1.6em 0 .3em;border-bottom:2px solid #1f5fa8;
padding-bottom:.2em;word-break:break-all}h3{font-size:1.05em;margin:1.2em 0 .3em}
.meta{color:#555;margin:.2em 0}.meta code{word-break:break-all}
table{border-collapse:collapse;margin:.4em 0;width:100%}th,td{padding:.25em .4em;border-bottom:1px solid #ddd;
text-align:right;white-space:nowrap}th{background:#f3f5f8;font-weight:600}th.g{text-align:center;border-bottom:1px solid #bbb}td.l,th.l{text-align:left}
td.wrap{white-space:normal;word-break:break-all}
td small{display:block;color:#777;font-size:.8em}
.v{display:inline-block;padding:.1em .6em;border-radius:3px;color:#fff;font-weight:600}
.green{background:#3c9a1f}.amber{background:#d9a400}.red{background:#d23f31}.grey{background:#8a8a8a}
.bar{display:flex;width:90px;height:12px;border:1px solid #bbb}.bar span{display:block;height:100%}
.bw{background:#3c9a1f}.bc{background:#9ccc65}.bl{background:#d9a400}.bj{background:#8e5bb5}.bx{background:#d23f31}
.key span{display:inline-block;width:.9em;height:.9em;vertical-align:-.1em;margin:0 .3em 0 .8em}
svg.chart{width:100%;height:auto;display:block}svg text{font-family:"DejaVu Sans",Verdana,sans-serif}
svg .ax{font-size:11px;fill:#555}svg .th{font-size:11px;font-weight:600;stroke:#fff;stroke-width:3px;
paint-order:stroke}svg .none{font-size:16px;fill:#888}
svg .cnt{font-size:10px;fill:#fff;font-weight:600}
.note{background:#fff6e0;border-left:4px solid #d9a400;padding:.4em .8em}
.empty{background:#f3f5f8;border-left:4px solid #8a8a8a;padding:.4em .8em}
footer{margin-top:2.5em;color:#666;font-size:.85em;border-top:1px solid #ddd;padding-top:.6em}
@media print{body{max-width:none;margin:0;font-size:11px}section.profile{break-before:page}
h3,table,svg{break-inside:avoid}a{color:inherit;text-decoration:none}}
"""


@record(frozen=True)
class Section:
    """What the page shows of one profile."""

    profile: Profile
    limits: Thresholds
    summary: Optional[Summary]
    damaged: int = 0
    examples: tuple[str, ...] = ()
    truncated: bool = False
    problem: str = ""  # why its history could not be read


def _share_cells(w: Window) -> str:
    cells = []
    for name, _css in SHARES:
        n = getattr(w, name)
        cells.append('<td class="%s">%s<small>%s</small></td>' % (name, percent(n, w.probes), count(n)))
    return "".join(cells)


def _bar(w: Window) -> str:
    if not w.probes:
        return ""
    parts = "".join('<span class="b%s" style="width:%.3f%%"></span>' % (css[0] if css != "lost" else "x",
                                                                        100.0 * getattr(w, name) / w.probes)
                    for name, css in SHARES if getattr(w, name))
    return '<div class="bar">%s</div>' % parts


def _window_name(w: Window, since: Optional[float], first: Optional[str]) -> str:
    if w.start is not None:
        return "last " + w.name
    return "all<small>since %s</small>" % (utc_time(since, "%Y-%m-%d") if since is not None else
                                          first[:10] if first else DASH)


def _shares_table(section: Section, since: Optional[float]) -> str:
    s, lim = section.summary, section.limits
    assert s is not None
    warn, crit = threshold(lim.warning), threshold(lim.critical)
    head = ('<tr><th></th><th></th><th class="g" colspan="5">share of the probes: back after</th>'
            '<th class="g" colspan="4">round trip</th><th></th></tr>'
            '<tr><th class="l">probes sent</th><th>probes</th><th>&le; %s</th><th>%s&ndash;%s</th>'
            '<th>&gt; %s</th><th>in Junk</th><th>lost</th><th>p50</th><th>p95</th><th>p99</th><th>slowest</th>'
            '<th class="l">shares</th></tr>' % (warn, warn, crit, crit))
    rows = []
    for w in s.windows:
        rtts: list[Optional[float]] = list(w.rtts) or [None] * 4
        rows.append('<tr data-window="%s"><td class="l">%s</td><td class="probes">%s</td>%s%s<td class="l">%s</td></tr>' % (
            w.name, _window_name(w, since, s.first), count(w.probes), _share_cells(w),
            "".join('<td class="%s">%s</td>' % (k, seconds(v)) for k, v in zip(("p50", "p95", "p99", "max"), rtts)),
            _bar(w)))
    key = ('<p class="key">%s</p>' % "".join(
        '<span class="b%s"></span>%s' % (css, words) for css, words in (
            ("w", "back within -w"), ("c", "within -c"), ("l", "later"), ("j", "in Junk"), ("x", "lost"))))
    return "<table class=\"shares\">%s%s</table>%s" % (head, "".join(rows), key)


def _slowest_table(s: Summary) -> str:
    if not s.slowest:
        return '<p class="empty">No probe came back in the last 30 days.</p>'
    rows = []
    for p in s.slowest:
        legs = DASH if p.leg_out != p.leg_out and p.leg_back != p.leg_back else "%s / %s" % (
            seconds(p.leg_out), seconds(p.leg_back))
        found = escape(p.folder) + (" (late, after being counted lost)" if p.outcome == LATE else "")
        rows.append('<tr><td class="l">%s</td><td>%s</td><td class="l wrap">%s</td><td class="l wrap">%s</td>'
                    '<td>%s</td><td class="l wrap"><code>%s</code></td></tr>' % (
                        utc(p.sent), seconds(p.rtt), found, escape(p.node) or DASH, legs, escape(p.probe_id)))
    return ('<table class="slowest"><tr><th class="l">sent (UTC)</th><th>round trip</th><th class="l">found in</th>'
            '<th class="l">node</th><th>legs out / back</th><th class="l">probe id</th></tr>%s</table>' % "".join(rows))


def _outage_table(s: Summary) -> str:
    if not s.outages:
        return '<p class="empty">No probe was lost in the last 30 days.</p>'
    rows = "".join('<tr><td class="l">%s</td><td class="l">%s</td><td>%s</td></tr>' % (
        utc(o.first), utc(o.last) if o.probes > 1 else DASH, count(o.probes)) for o in s.outages)
    more = ('<p class="meta">and %s earlier runs of lost probes in the last 30 days.</p>' % count(s.more_outages)
            if s.more_outages else "")
    return ('<table class="lost"><tr><th class="l">first lost probe sent (UTC)</th><th class="l">last (UTC)</th>'
            '<th>probes lost</th></tr>%s</table>%s' % (rows, more))


def _legend(*items: tuple[str, str]) -> str:
    return '<p class="key">%s</p>' % "".join(
        '<span style="background:%s"></span>%s' % (colour, words) for colour, words in items)


def _meta(section: Section, anchor: str) -> str:
    p, lim, s = section.profile, section.limits, section.summary
    lines = ['thresholds -w %s, -c %s (%s)' % (threshold(lim.warning), threshold(lim.critical), lim.source)]
    if p.history:
        lines.append("history <code>%s</code>" % escape(p.history))
    if s is not None and s.first:
        lines.append("%s probes sent from %s to %s UTC" % (count(s.windows[-1].probes), utc(s.first), utc(s.last)))
    out = ['<p class="meta">%s</p>' % " &middot; ".join(lines)]
    if p.name != p.stem:
        out.append('<p class="meta">state file <code>%s.json</code></p>' % escape(p.stem))
    notes = []
    if section.damaged:
        notes.append("%s damaged line%s skipped (%s)" % (count(section.damaged), "s" if section.damaged != 1 else "",
                                                          escape("; ".join(section.examples))))
    if section.truncated:
        notes.append("the history file is longer than the report reads; its last lines are left out")
    if p.problem:
        notes.append(escape(p.problem) + "; its name and thresholds are not known")
    if notes:
        out.append('<p class="note" id="%s-notes">%s</p>' % (anchor, "<br>".join(n[0].upper() + n[1:] for n in notes)))
    return "".join(out)


def _section(section: Section, number: int, now: float, since: Optional[float]) -> str:
    anchor = "profile-%d" % number
    head = '<section class="profile" id="%s"><h2>%s</h2>%s' % (anchor, escape(section.profile.name),
                                                               _meta(section, anchor))
    s = section.summary
    if section.problem:
        return head + '<p class="note">The history could not be read: %s.</p></section>' % escape(section.problem)
    if s is None or not s.windows[-1].probes:
        return head + ('<p class="empty">No probes recorded yet: the check has not settled a probe of this '
                       'profile%s.</p></section>' % (" since " + utc_time(since) if since is not None else ""))
    lim = section.limits
    first = epoch(s.first) if s.first else None
    return "".join([
        head, "<h3>Delivery</h3>", _shares_table(section, since),
        "<h3>The last 24 hours</h3>", day_chart(s.points, now, lim, first),
        _legend(("#1f5fa8", "a probe back (its round trip)"), ("#d98c00", "filed as Junk"),
                ("#c62828", "lost (top row)")),
        "<h3>The last 7 days</h3>", week_chart(s.hours, now, lim, first),
        _legend(("#b9d0ea", "hourly p50 to p95"), ("#1f5fa8", "hourly p50"), ("#c62828", "hour with lost probes"),
                ("#d98c00", "hour with probes in Junk")),
        "<h3>The last 30 days</h3>", month_chart(s.days, now, lim, first),
        _legend(("#b9d0ea", "daily p50 to p95"), ("#1f5fa8", "daily p50"), ("#777", "slowest of the day"),
                ("#c62828", "lost probes of the day")),
        "<h3>The slowest probes of the last 30 days</h3>", _slowest_table(s),
        "<h3>Lost probes of the last 30 days</h3>", _outage_table(s),
        "</section>"])


def _overview(sections: list[Section]) -> str:
    rows = []
    for number, sec in enumerate(sections, 1):
        s = sec.summary
        day = s.windows[0] if s is not None else None
        state = verdict(day, sec.limits) if day is not None and not sec.problem else "grey"
        if day is None or sec.problem or s is None or not s.windows[-1].probes:
            figures = '<td colspan="6" class="l">%s</td>' % ("history unreadable" if sec.problem else "no probes yet")
        else:
            rtts: list[Optional[float]] = list(day.rtts) or [None, None]
            figures = "<td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td>" % (
                count(day.probes), percent(day.within_w + day.within_c, day.probes), seconds(rtts[0]),
                seconds(rtts[1]), count(day.lost), count(day.junk))
        rows.append('<tr data-profile="%d"><td class="l wrap"><a href="#profile-%d">%s</a></td>'
                    '<td class="l"><span class="v %s">%s</span></td>%s</tr>' % (
                        number, number, escape(sec.profile.name), state, VERDICT_WORDS[state], figures))
    return ('<table class="overview"><tr><th class="l">profile</th><th class="l">last 24 h</th><th>probes</th>'
            '<th>back within -c</th><th>p50</th><th>p95</th><th>lost</th><th>in Junk</th></tr>%s</table>'
            % "".join(rows))


def page(sections: list[Section], now: float, state_dir: str, since: Optional[float] = None) -> str:
    """The whole page for the profiles' *sections* as of *now* (epoch seconds)."""
    when = utc_time(now) + " UTC"
    scope = " &middot; probes sent since %s UTC" % utc_time(since) if since is not None else ""
    body = "".join(_section(sec, n, now, since) for n, sec in enumerate(sections, 1))
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<title>%s, %s</title><style>%s</style></head><body>"
        "<header><h1>%s</h1><p class=\"meta\">As of %s &middot; state directory <code>%s</code> &middot; "
        "%d profile%s%s</p></header>"
        "<h2>The last 24 hours</h2>%s%s"
        "<footer>Made by mail_roundtrip_report %s from the check's history files. All times are UTC. "
        "A probe counts by its send time; &ldquo;back &le; -w&rdquo; means its round trip was at most the "
        "warning threshold, &ldquo;back &le; -c&rdquo; above that and at most the critical one, "
        "&ldquo;later&rdquo; beyond it (a probe counted lost that came back after all counts there). "
        "Percentiles are by nearest rank over the probes that came back, Junk included. "
        "Verdicts: good when at least 99 %% came back within -c and p95 is within -w, bad under 95 %% or "
        "with p50 beyond -c, degraded between.</footer>"
        "</body></html>\n"
    ) % (TITLE, when, CSS, TITLE, when, escape(state_dir), len(sections), "s" if len(sections) != 1 else "",
         scope, _overview(sections), body, __version__)

