"""The report as a person sees it: the page and the badge rendered by real headless Chromium
(Debian's chromium, installed when missing), screenshots that are not blank, and the figures of
a history with known probes read back from the DOM Chromium built."""

import os
from collections import Counter

import pytest

from tests.histories import KNOWN_UNTIL, known
from tests.lab import browser
from tests.report_page import figures, overview, report

pytestmark = pytest.mark.lab  # installs chromium when it is missing (as the lab's packages are)

WHITE = (255, 255, 255)
BLUE, RED, AMBER = (0x1F, 0x5F, 0xA8), (0xC6, 0x28, 0x28), (0xD9, 0x8C, 0x00)


@pytest.fixture(scope="module")
def chromium():
    try:
        if os.geteuid() == 0:
            browser.install()
    except Exception as exc:  # noqa: BLE001  (any reason must fail the tests, loudly)
        pytest.fail("chromium could not be installed: %s" % exc, pytrace=False)


@pytest.fixture
def pages(tmp_path):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    known(str(state))
    out, badge = tmp_path / "report.html", tmp_path / "badge.svg"
    r = report("--state-dir", str(state), "--output", str(out), "--badge", str(badge), "--until", KNOWN_UNTIL)
    assert r.returncode == 0, r
    return out, badge


def colours(png):
    with open(png, "rb") as fh:
        width, height, rows = browser.png_pixels(fh.read())
    return width, height, Counter(pixel for row in rows for pixel in row)


def test_the_page_renders_with_its_tables_and_charts_drawn(chromium, pages, tmp_path):
    shot = str(tmp_path / "page.png")
    browser.screenshot(str(pages[0]), shot)
    width, height, seen = colours(shot)
    assert (width, height) == browser.WINDOW
    drawn = width * height - seen[WHITE]
    assert drawn > 0.08 * width * height, "only %d pixels are not white" % drawn
    assert len(seen) > 300, "only %d colours" % len(seen)
    assert seen[BLUE] > 500, "the round trips are not drawn (%d blue pixels)" % seen[BLUE]
    assert seen[RED] > 100, "the lost probes are not marked (%d red pixels)" % seen[RED]
    assert seen[AMBER] > 20, "the Junk hour is not marked (%d amber pixels)" % seen[AMBER]


def test_the_dom_shows_the_known_shares_and_percentiles(chromium, pages):
    dom = browser.dump_dom(str(pages[0]))
    f = figures(dom)
    assert [f["24 h"][k] for k in ("probes", "within_w", "within_c", "later", "junk", "lost",
                                   "p50", "p95", "p99", "max")] == [
        "106", "28.30 %30", "56.60 %60", "10.38 %11", "0.00 %0", "4.72 %5", "51.0 s", "96.0 s", "100 s", "1.1 h"]
    assert [f["30 d"][k] for k in ("probes", "junk", "lost", "p50", "p95")] == [
        "120", "3.33 %4", "4.17 %5", "44.0 s", "96.0 s"]
    assert overview(dom)[0][1:4] == ["bad", "106", "84.91 %"]
    assert dom.count("<svg") == 3


def test_the_badge_renders_its_label_on_grey_and_its_figures_on_red(chromium, pages, tmp_path):
    shot = str(tmp_path / "badge.png")
    browser.screenshot(str(pages[1]), shot, window=(320, 40))
    _w, _h, seen = colours(shot)
    red = sum(n for (r, g, b), n in seen.items() if r > 170 and g < 90 and b < 80)
    grey = sum(n for (r, g, b), n in seen.items() if max(r, g, b) - min(r, g, b) < 6 and 60 < r < 110)
    text = sum(n for (r, g, b), n in seen.items() if min(r, g, b) > 200 and (r, g, b) != WHITE)
    assert red > 800 and grey > 800 and text > 50, seen.most_common(12)
