"""The documentation people can find: README short, every link and command true to the tree.

README.md stays an overview of at most 300 lines; the rest lives in docs/
(tutorial, how-to, reference, explanation, troubleshooting).  Checked here,
without the lab: every relative link in README.md and docs/**/*.md points at
a file that exists, and at a heading that exists where it names one; every
command README shows that starts with `bash ` or `python3 ` names files that
exist; every test a page names (`test_x.py::test_y`, with or without
`tests/`, and the further tests of its table cell) is a test function of that
file; docs/reference/options.md is what tools/options_doc.py writes from the
check's parser; the troubleshooting page shows status lines, each entry names
the tests that assert its lines, and its OAuth2 usage errors are what the
check prints.
"""

import ast
import glob
import os
import re
import shlex
import subprocess
import sys

import pytest

from tests.checkrun import COMMAND, ROOT
from tests.lab import plugin
from tools import options_doc

README = os.path.join(ROOT, "README.md")
TROUBLESHOOTING = os.path.join(ROOT, "docs", "troubleshooting.md")
PAGES = [README] + sorted(glob.glob(os.path.join(ROOT, "docs", "**", "*.md"), recursive=True))
LINK = re.compile(r"(?<!!)\[([^\]]*)\]\(([^)\s]+)\)")
CITED = re.compile(r"`(tests/[\w/]+\.py)::(test_\w+)`")


def read(path):
    with open(path, encoding="utf-8") as fh:
        return fh.read()


def prose(text, spans=False):
    """The lines of a Markdown text outside code blocks (fenced or 4-space indented), without their
    code spans unless *spans*."""
    out, fenced, prev_blank, in_block = [], False, True, False
    for line in text.split("\n"):
        if line.startswith("```"):
            fenced = not fenced
            continue
        in_block = (line.startswith("    ") and (prev_blank or in_block)) or (in_block and not line.strip())
        prev_blank = not line.strip()
        if fenced or in_block:
            continue
        out.append(line if spans else re.sub(r"`[^`]*`", "", line))
    return out


def code_blocks(text):
    """The 4-space indented code blocks of a Markdown text, each as its non-empty lines (dedented)."""
    return [[ln for ln in block.split("\n") if ln.strip()] for block in plugin.code_blocks(text)]


def slug(heading):
    """GitHub's anchor for a heading: its text (links and code reduced to their words), lower case,
    punctuation dropped, spaces as hyphens."""
    text = LINK.sub(r"\1", heading).replace("`", "").strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path):
    found, seen = set(), {}
    for line in prose(read(path), spans=True):
        m = re.match(r"#{1,6} (.+?)\s*#*$", line)
        if m:
            base = slug(m.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            found.add(base if n == 0 else "%s-%d" % (base, n))
    return found


def links(path):
    """(target, line number) of every link in *path* that stays in this repository."""
    for number, line in enumerate(prose(read(path)), 1):
        for m in LINK.finditer(line):
            target = m.group(2)
            if not re.match(r"[a-z]+:", target):
                yield target, number


# -- README ------------------------------------------------------------------------------------

def test_readme_is_at_most_300_lines():
    lines = read(README).count("\n")
    assert lines <= 300, "README.md has %d lines; move detail into docs/ (docs/README.md is the index)" % lines


def test_readme_links_into_every_part_of_docs():
    targets = {os.path.normpath(os.path.join(ROOT, t.split("#")[0])) for t, _ in links(README)}
    for page in ("docs/README.md", "docs/tutorial.md", "docs/troubleshooting.md", "docs/reference/options.md"):
        assert os.path.join(ROOT, page) in targets, "README.md does not link %s" % page


@pytest.mark.parametrize("path", PAGES, ids=lambda p: os.path.relpath(p, ROOT))
def test_every_relative_link_points_at_a_file_and_heading_that_exist(path):
    broken = []
    for target, number in links(path):
        where, _, anchor = target.partition("#")
        dest = os.path.normpath(os.path.join(os.path.dirname(path), where)) if where else path
        if not os.path.exists(dest):
            broken.append("line %d: %s: no such file" % (number, target))
        elif anchor and dest.endswith(".md") and anchor not in anchors(dest):
            broken.append("line %d: %s: no heading with that anchor in %s" % (number, target, os.path.relpath(dest, ROOT)))
    assert not broken, "%s:\n  %s" % (os.path.relpath(path, ROOT), "\n  ".join(broken))


def test_every_page_of_docs_is_linked_from_the_index():
    index = os.path.join(ROOT, "docs", "README.md")
    linked = {os.path.normpath(os.path.join(os.path.dirname(index), t.split("#")[0])) for t, _ in links(index)}
    missing = [os.path.relpath(p, ROOT) for p in PAGES if p not in (README, index) and p not in linked]
    assert not missing, "docs/README.md does not list %s" % missing


def readme_commands():
    """Every command README shows, in a code block or a code span, that starts with bash or python3."""
    text = read(README)
    lines = [ln for block in code_blocks(text) for ln in block]
    lines += re.findall(r"`([^`\n]+)`", text)
    return sorted({ln.strip() for ln in lines if re.match(r"\s*(bash|python3) ", ln)})


def named_files(command):
    """The files a `bash …`/`python3 …` command names: the script (or -m module), then every
    relative path among its arguments (a redirection's too)."""
    words = shlex.split(command.split("#")[0])
    files, args = [], words[1:]
    if args[:1] == ["-m"]:
        module = os.path.join(*args[1].split("."))
        files.append(os.path.join(module, "__main__.py") if os.path.isdir(os.path.join(ROOT, module)) else module + ".py")
        args = args[2:]
    elif args and not args[0].startswith("-"):
        files.append(args[0])
        args = args[1:]
    for word in args:
        word = word.lstrip(">")
        if "/" in word and not re.match(r"[-/$<~]", word) and "=" not in word and "|" not in word:
            files.append(word)
    return files


def test_readme_shows_commands():
    assert any(c.startswith("bash ") for c in readme_commands()), readme_commands()
    assert any(c.startswith("python3 ") for c in readme_commands()), readme_commands()


@pytest.mark.parametrize("command", readme_commands())
def test_every_command_readme_shows_names_files_that_exist(command):
    files = named_files(command)
    assert files, "cannot tell which file %r runs" % command
    missing = [f for f in files if not os.path.exists(os.path.join(ROOT, f))]
    assert not missing, "README shows %r, but %s do not exist" % (command, missing)


def test_readme_says_what_the_test_run_installs_and_writes():
    section = read(README).split("## How to run the tests\n", 1)[1].split("\n## ", 1)[0]
    flat = " ".join(section.split())
    for words in ("bash tests/run", "icinga2", "nagios4-core", "graphite-carbon", "/opt/check_mail_roundtrip",
                  "/var/lib/check_mail_roundtrip", "/etc/check_mail_roundtrip", "user `nagios`",
                  '-m "not lab"'):
        assert words in flat, "README's 'How to run the tests' does not say %r" % words


# -- the options reference ---------------------------------------------------------------------

def test_options_reference_is_what_the_generator_writes():
    assert read(options_doc.PAGE) == options_doc.page(), (
        "docs/reference/options.md is stale: run  python3 tools/options_doc.py > docs/reference/options.md")


def test_the_generator_check_passes_on_the_current_page_and_fails_on_a_stale_one(tmp_path, monkeypatch, capsys):
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "options_doc.py"), "--check"],
                       capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert (r.returncode, r.stderr) == (0, ""), r
    stale = tmp_path / "options.md"
    stale.write_text(options_doc.page().replace("| `--keep` |", "| `--kept` |"))
    monkeypatch.setattr(options_doc, "PAGE", str(stale))
    assert options_doc.main(["--check"]) == 1
    assert "is stale: run  python3 tools/options_doc.py > " in capsys.readouterr().err


def test_the_generator_takes_defaults_out_of_the_help_text():
    assert options_doc.split_default("SMTP port (default: 25 for starttls/none, 465 for tls)") == \
        ("SMTP port", "25 for starttls/none, 465 for tls")
    assert options_doc.split_default("a probe not back after this long is lost (default: 3600; must exceed "
                                      "--critical)") == \
        ("a probe not back after this long is lost (must exceed --critical)", "3600")
    assert options_doc.split_default("SASL mechanism (default auto: OAUTHBEARER where offered)") == \
        ("SASL mechanism", "auto: OAUTHBEARER where offered")
    assert options_doc.split_default("STARTTLS (default), implicit TLS, or no TLS") == \
        ("STARTTLS, implicit TLS, or no TLS", None)
    two = "section SECTION (default: a) of FILE (default: b)"
    assert options_doc.split_default(two) == (two, None)


# -- troubleshooting ---------------------------------------------------------------------------

def sections(text):
    """(heading, body) of each heading of a Markdown text."""
    parts = re.split(r"(?m)^(#{2,3} .+)$", text)
    return list(zip(parts[1::2], parts[2::2]))


def test_troubleshooting_shows_status_lines_each_with_the_tests_that_assert_it():
    entries = [(h, b) for h, b in sections(read(TROUBLESHOOTING))
               if any(ln.startswith("MAIL_ROUNDTRIP ") for block in code_blocks(b) for ln in block)]
    assert len(entries) >= 20, [h for h, _ in entries]
    for heading, body in entries:
        for line in (ln for block in code_blocks(body) for ln in block):
            assert re.match(r"MAIL_ROUNDTRIP (OK|WARNING|CRITICAL|UNKNOWN) - \S", line), (heading, line)
        assert CITED.search(body), "%s shows status lines but names no test asserting them" % heading


@pytest.mark.parametrize("path", PAGES, ids=lambda p: os.path.relpath(p, ROOT))
def test_every_test_a_page_cites_exists(path):
    missing = []
    for test_file, name in CITED.findall(read(path)):
        full = os.path.join(ROOT, test_file)
        if not os.path.isfile(full) or not re.search(r"(?m)^def %s\(" % name, read(full)):
            missing.append("%s::%s" % (test_file, name))
    assert not missing, "%s cites tests that do not exist: %s" % (os.path.relpath(path, ROOT), missing)


# `tests/test_x.py::test_y` or `test_x.py::test_y` (a parametrized id after it is left out); in a
# table cell, a further `test_z` after such a reference is a test of the same file
NAMED = re.compile(r"`(?:tests/)?(test_\w+\.py)::(test_\w+)|`(test_\w+)(?:\[[^\]`]*\])?`")


def defined_tests(test_file):
    """The names of the test functions a file of tests/ defines (none when there is no such file)."""
    full = os.path.join(ROOT, "tests", test_file)
    if not os.path.isfile(full):
        return set()
    return {node.name for node in ast.parse(read(full)).body
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test_")}


def named_tests(text):
    """(line number, file, test) of every test a Markdown text names by its file, and of every further
    test named after it in the same table cell."""
    for number, line in enumerate(text.split("\n"), 1):
        for cell in re.split(r"(?<!\\)\|", line):
            test_file = None
            for m in NAMED.finditer(cell):
                if m.group(1):
                    test_file = m.group(1)
                    yield number, test_file, m.group(2)
                elif test_file:
                    yield number, test_file, m.group(3)


@pytest.mark.parametrize("path", PAGES, ids=lambda p: os.path.relpath(p, ROOT))
def test_every_test_a_page_names_is_a_test_function_of_that_file(path):
    missing = ["line %d: %s::%s" % (number, test_file, name) for number, test_file, name in named_tests(read(path))
               if name not in defined_tests(test_file)]
    assert not missing, "%s names tests that do not exist:\n  %s" % (os.path.relpath(path, ROOT), "\n  ".join(missing))


def test_a_stale_test_name_is_found_in_a_reference_and_in_its_cell():
    text = ("| a | `tests/test_docs.py::test_readme_shows_commands`, `test_gone`, `test_docs.py::test_gone_too[x]` |\n"
            "| `test_docs.py::test_readme_is_at_most_300_lines` \\| `test_readme_shows_commands` | `test_other` |\n")
    assert list(named_tests(text)) == [
        (1, "test_docs.py", "test_readme_shows_commands"), (1, "test_docs.py", "test_gone"),
        (1, "test_docs.py", "test_gone_too"), (2, "test_docs.py", "test_readme_is_at_most_300_lines"),
        (2, "test_docs.py", "test_readme_shows_commands")]
    assert {"test_readme_shows_commands", "test_every_test_a_page_names_is_a_test_function_of_that_file"} \
        <= defined_tests("test_docs.py")
    assert "test_gone" not in defined_tests("test_docs.py") and defined_tests("test_no_such_file.py") == set()


OAUTH2_USAGE = [
    (["--imap-auth", "oauth2"],
     "OAuth2 needs exactly one token source: --oauth2-token-file, --oauth2-token-command or --oauth2-token-url"),
    (["--imap-auth", "oauth2", "--oauth2-token-url", "https://127.0.0.1:20132/token", "--oauth2-client-id", "x"],
     "the client_credentials grant needs the client secret: --oauth2-client-secret-file or "
     "$CHECK_MAIL_ROUNDTRIP_OAUTH2_CLIENT_SECRET"),
    (["--imap-auth", "oauth2", "--oauth2-token-url", "http://127.0.0.1:20132/token", "--oauth2-client-id", "x"],
     "--oauth2-token-url must be an https:// URL: http://127.0.0.1:20132/token"),
    (["--oauth2-token-file", "/x"], "--oauth2-token-file needs --imap-auth oauth2 or --smtp-auth oauth2"),
]


@pytest.mark.parametrize("argv, message", OAUTH2_USAGE, ids=lambda v: v if isinstance(v, str) else None)
def test_the_oauth2_usage_errors_shown_are_what_the_check_prints(tmp_path, argv, message):
    line = "MAIL_ROUNDTRIP UNKNOWN - usage error: %s (see --help)" % message
    assert line in {ln for block in code_blocks(read(TROUBLESHOOTING)) for ln in block}
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHECK_MAIL_ROUNDTRIP_")}
    r = subprocess.run([sys.executable, COMMAND, "-H", "127.0.0.1", "--from", "monitor@lab.test",
                        "--state-dir", str(tmp_path / "state"), *argv],
                       capture_output=True, text=True, env=env, timeout=60)
    assert (r.returncode, r.stdout, r.stderr) == (3, line + "\n", ""), r
