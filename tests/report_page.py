"""The report command as a person runs it, and the figures its page shows, read from the HTML
(the file written, or Chromium's DOM).

    r = report("--state-dir", DIR, "--output", FILE)      # a CompletedProcess (text)
    figures(html)["24 h"]["within_w"] == "28.30 %1,439"   # the cell's text, its parts joined
    overview(html) == [["profile name", "good", "1,434", ...]]
"""

import os
import subprocess
import sys
from html.parser import HTMLParser

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMAND = os.path.join(ROOT, "mail_roundtrip_report")


def report(*args):
    """Run the checkout's mail_roundtrip_report with *args* (stdin closed, output kept); never a traceback."""
    r = subprocess.run([sys.executable, COMMAND, *args], capture_output=True, text=True, timeout=120, cwd=ROOT,
                       stdin=subprocess.DEVNULL)
    assert "Traceback" not in r.stdout + r.stderr, r
    return r


class _Cells(HTMLParser):
    """The text of each cell of the rows that carry *attribute*, by the attribute's value."""

    def __init__(self, attribute):
        super().__init__()
        self.attribute, self.rows, self.row, self.cell = attribute, {}, None, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "tr" and self.attribute in attrs:
            self.row = self.rows.setdefault(attrs[self.attribute], [])
        elif tag == "td" and self.row is not None:
            self.cell = [attrs.get("class") or "", ""]
            self.row.append(self.cell)

    def handle_endtag(self, tag):
        if tag == "tr":
            self.row = None
        elif tag == "td":
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell[1] += data


def figures(html):
    """{window: {cell class: text}} of the first profile's delivery table."""
    parser = _Cells("data-window")
    parser.feed(html)
    return {window: {cls: text for cls, text in cells} for window, cells in parser.rows.items()}


def overview(html):
    """The overview's rows, each the texts of its cells."""
    parser = _Cells("data-profile")
    parser.feed(html)
    return [[text for _cls, text in cells] for _n, cells in sorted(parser.rows.items())]
