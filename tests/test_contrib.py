"""README shows contrib/'s monitoring definitions word for word.

Admins paste from README or copy from contrib/: both must be the same text,
and it is contrib/'s that the Icinga 2 and Nagios tests load into the real
daemons.
"""

import glob
import os
import re

import pytest

from tests.checkrun import ROOT

FILES = sorted(glob.glob(os.path.join(ROOT, "contrib", "*", "*.c*")))


def indented(text):
    """*text* as a Markdown code block: every non-empty line indented by four spaces."""
    return "".join(("    " + line) if line.strip() else "\n" for line in text.splitlines(True))


def test_there_are_definitions_for_icinga2_and_nagios():
    kinds = {os.path.basename(os.path.dirname(f)) for f in FILES}
    assert {"icinga2", "nagios"} <= kinds, FILES


@pytest.mark.parametrize("path", FILES, ids=lambda p: os.path.relpath(p, ROOT))
def test_readme_holds_the_file_verbatim(path):
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    with open(path, encoding="utf-8") as f:
        text = f.read()
    assert text.endswith("\n") and indented(text) in readme, (
        "README.md does not show %s word for word (as a 4-space indented block)"
        % os.path.relpath(path, ROOT))


def test_readme_options_table_has_every_option():
    """Every option of the check has its row in README's Options table."""
    from check_mail_roundtrip import cli
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    table = readme[readme.index("## Options\n"):readme.index("### Options from a file")]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    named = " ".join(line.split(" | ")[0] for line in rows)
    options = [o for a in cli.parser()._actions for o in a.option_strings if o.startswith("--")]
    missing = [o for o in options if not re.search(r"`%s[ `/]" % re.escape(o), named)
               and not re.search(r"[ `]%s[ `]" % re.escape(o), named)]
    assert not missing, "README's Options table lacks %s" % missing
