"""contrib/'s monitoring definitions, the check's options and the docs agree.

Admins copy the files in contrib/ (it is they that the Icinga 2 and Nagios
tests load into the real daemons); the how-to pages in docs/howto/ link them
and say what is in them, without pasting them.  So: every contrib file is
linked from a how-to; what a how-to quotes of a file as a definition line is
in that file; every option a definition passes is a real option of the check,
and the CheckCommand's variables are named as docs/howto/icinga2.md says;
every variable the docs name is one contrib defines or uses; what the files
refer to (README's sections, docs/ pages) exists; and every option of the check
has its row in the generated docs/reference/options.md.
"""

import glob
import os
import re

import pytest

from check_mail_roundtrip import cli
from tests.checkrun import ROOT
from tests.test_docs import PAGES, anchors, links, read, slug

FILES = sorted(glob.glob(os.path.join(ROOT, "contrib", "*", "*.c*")))
HOWTOS = sorted(glob.glob(os.path.join(ROOT, "docs", "howto", "*.md")))
CHECK_COMMAND = os.path.join(ROOT, "contrib", "icinga2", "mail_roundtrip.conf")
NAGIOS = os.path.join(ROOT, "contrib", "nagios", "mail_roundtrip.cfg")
OPTIONS_PAGE = os.path.join(ROOT, "docs", "reference", "options.md")
# which contrib files a how-to's quotes are checked against
QUOTED_FROM = {"nagios.md": "nagios", "icinga2.md": "icinga2", "icinga2-cluster.md": "icinga2"}


def options():
    """{option string: the long option it belongs to} for every option of the check."""
    found = {}
    for action in cli.parser()._actions:
        longs = [o for o in action.option_strings if o.startswith("--")]
        for o in action.option_strings:
            found[o] = longs[0] if longs else o
    return found


def kind(path):
    return os.path.basename(os.path.dirname(path))


def flat(text):
    return " ".join(text.split())


def test_there_are_definitions_for_icinga2_and_nagios():
    assert {"icinga2", "nagios"} <= {kind(f) for f in FILES}, FILES


@pytest.mark.parametrize("path", FILES, ids=lambda p: os.path.relpath(p, ROOT))
def test_every_contrib_file_is_linked_from_a_howto(path):
    linked = {os.path.normpath(os.path.join(os.path.dirname(h), t.split("#")[0])) for h in HOWTOS for t, _ in links(h)}
    assert path in linked, "no page in docs/howto/ links %s" % os.path.relpath(path, ROOT)


def quoted_definitions(howto):
    """The code spans of *howto* that begin like a definition line of its contrib files (a line
    whose first word also begins a line there), with those files' text."""
    texts = [read(f) for f in FILES if kind(f) == QUOTED_FROM[os.path.basename(howto)]]
    starts = {line.split()[0] for text in texts for line in text.splitlines() if line.strip()}
    spans = re.findall(r"`([^`\n]+)`", read(howto))
    return [s for s in spans if s.split()[0] in starts], flat("\n".join(texts))


@pytest.mark.parametrize("name", sorted(QUOTED_FROM))
def test_what_a_howto_quotes_of_a_definition_is_in_the_file(name):
    quotes, text = quoted_definitions(os.path.join(ROOT, "docs", "howto", name))
    assert len(quotes) >= 2, quotes  # the rule finds the quotes
    missing = [q for q in quotes if flat(q) not in text]
    assert not missing, "docs/howto/%s quotes what contrib/%s does not hold: %s" % (name, QUOTED_FROM[name], missing)


@pytest.mark.parametrize("path", [f for f in FILES if kind(f) == "icinga2"], ids=lambda p: os.path.relpath(p, ROOT))
def test_every_checkcommand_argument_is_a_real_option(path):
    keys = re.findall(r'^\s*"(-[^"]+)" = \{', read(path), re.M)
    unknown = [k for k in keys if k not in options()]
    assert not unknown, "%s passes options the check does not have: %s" % (os.path.relpath(path, ROOT), unknown)


def test_every_option_of_the_nagios_command_is_a_real_option():
    [line] = re.findall(r"^\s*command_line\s+(.+)$", read(NAGIOS), re.M)
    passed = re.findall(r"(?<!\S)(-{1,2}[A-Za-z][\w-]*)", line)
    assert "--from" in passed, passed
    unknown = [o for o in passed if o not in options()]
    assert not unknown, "contrib/nagios/mail_roundtrip.cfg passes options the check does not have: %s" % unknown


def test_checkcommand_variables_are_named_as_the_howto_says():
    """docs/howto/icinga2.md: the variable of an option is mail_roundtrip_ and its long name
    with _ for -; flags are set_if, the others value."""
    assert "`mail_roundtrip_` and the option's long name with `_`" in flat(read(os.path.join(ROOT, "docs", "howto",
                                                                                             "icinga2.md")))
    text = read(CHECK_COMMAND)
    wrong = []
    for key, body in re.findall(r'^\s*"(-[^"]+)" = \{(.*?)\}', text, re.M | re.S):
        variable = "mail_roundtrip_" + options()[key][2:].replace("-", "_")
        if not re.search(r'\b(value|set_if) = "\$%s\$"' % variable, body):
            wrong.append((key, variable))
    assert not wrong, wrong


def test_every_variable_the_docs_name_is_one_contrib_defines_or_uses():
    contrib = "\n".join(read(f) for f in FILES if kind(f) == "icinga2")
    known = set(re.findall(r"\bmail_roundtrip_\w+", contrib))
    unknown = {}
    for page in PAGES:
        for variable in re.findall(r"\bvars\.(mail_roundtrip_\w+)", read(page)):
            if variable not in known:
                unknown.setdefault(os.path.relpath(page, ROOT), []).append(variable)
    assert not unknown, "docs name Icinga variables that contrib/icinga2 has not: %s" % unknown


@pytest.mark.parametrize("path", FILES, ids=lambda p: os.path.relpath(p, ROOT))
def test_what_a_contrib_file_refers_to_exists(path):
    text = flat(re.sub(r"^\s*(\*|#)", " ", read(path), flags=re.M))
    sections = re.findall(r"README's \"([^\"]+)\"", text)
    pages = re.findall(r"\b(docs/[\w/.-]+\.md)\b", text)
    readme = anchors(os.path.join(ROOT, "README.md"))
    assert [s for s in sections if slug(s) not in readme] == []
    assert [p for p in pages if not os.path.isfile(os.path.join(ROOT, p))] == []


def test_options_reference_has_every_option():
    """Every option of the check has its row in docs/reference/options.md (generated from --help)."""
    rows = [line for line in read(OPTIONS_PAGE).splitlines() if line.startswith("| `")]
    named = " ".join(line.split(" | ")[0] for line in rows)
    longs = [o for o in options() if o.startswith("--")]
    missing = [o for o in longs if not re.search(r"`%s[ `,]" % re.escape(o), named)
               and not re.search(r"[ `]%s[ `]" % re.escape(o), named)]
    assert not missing, "docs/reference/options.md lacks %s" % missing
