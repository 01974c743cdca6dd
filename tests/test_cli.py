"""The command line as an admin meets it: -V, -h, usage errors, and the options
that change where state lives, what is read and how it is judged.

Runs the real command (tests/checkrun.py) against the loopback lab.  How
--stale-warning/--stale-critical and --lost-warning/--lost-critical judge a
run is proven in memory with whole status lines (tests/test_mem_thresholds.py).
"""

import base64
import imaplib
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import time

import pytest

import check_mail_roundtrip
from check_mail_roundtrip import cli, probe as probe_format
from check_mail_roundtrip.state import file_stem
from tests.checkrun import COMMAND, ROOT, Checker, Result

MONITOR = "monitor@lab.test"
OTHER = "other@lab.test"
ENV_IMAP = "CHECK_MAIL_ROUNDTRIP_IMAP_PASSWORD"
ENV_SMTP = "CHECK_MAIL_ROUNDTRIP_SMTP_PASSWORD"
ENV_STATE = "CHECK_MAIL_ROUNDTRIP_STATE_DIR"
NUM = r"\d+(?:\.\d+)?"


def _run(argv, env=None, command=COMMAND, timeout=60):
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CHECK_MAIL_ROUNDTRIP_")}
    environ["COLUMNS"] = "100"
    environ.update(env or {})
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, command, *argv], capture_output=True, text=True, env=environ,
                       timeout=timeout, stdin=subprocess.DEVNULL)
    return Result(p.returncode, p.stdout, p.stderr, time.monotonic() - t0)


def _state_files(directory):
    return sorted(n for n in os.listdir(directory) if n.endswith(".json")) if os.path.isdir(directory) else []


def _state(check, name):
    with open(os.path.join(check.state_dir, file_stem(name) + ".json")) as f:
        return json.load(f)


def _imap(lab, user=MONITOR):
    conn = imaplib.IMAP4_SSL(lab.host, lab.ports["imaps"], timeout=10,
                             ssl_context=ssl.create_default_context(cafile=lab.ca_file))
    conn.login(user, lab.users[user])
    return conn


def _headers(lab, user=MONITOR, folder="INBOX"):
    """The raw header blocks of every message in a folder (read-only, nothing changes)."""
    conn = _imap(lab, user)
    try:
        conn.select(folder, readonly=True)
        typ, data = conn.uid("SEARCH", None, "ALL")
        assert typ == "OK", data
        blocks = []
        for uid in data[0].split():
            typ, parts = conn.uid("FETCH", uid, "(BODY.PEEK[HEADER])")
            assert typ == "OK", parts
            blocks += [p[1] for p in parts if isinstance(p, tuple)]
        return blocks
    finally:
        conn.logout()


def _returned_line(rc_state="OK", w="120", c="600", pending=1, extra=""):
    return re.compile(
        r"MAIL_ROUNDTRIP %s - round trip (%s)s, %d in flight, last success \d+s ago%s "
        r"\| junk=0;;;0 lost=0;;;0 oldest_pending=%ss;%s;%s;0 pending=%d;;;0 rtt=%ss;%s;%s;0 since_last_success=%ss;;;0"
        % (rc_state, NUM, pending, extra, NUM, w, c, pending, NUM, w, c, NUM))


def _full(r):
    """The status line with its perfdata, also when -v put the perfdata after the long output."""
    return r.line if " | " in r.line else "%s | %s" % (r.line, r.perfdata)


FIRST = ("MAIL_ROUNDTRIP OK - first probe sent, 1 in flight "
         "| junk=0;;;0 lost=0;;;0 oldest_pending=0.0s;120;600;0 pending=1;;;0")


# -- -V and -h -----------------------------------------------------------------

def test_version_and_help_document_every_option():
    r = _run(["-V"])
    assert (r.rc, r.stdout) == (0, "check_mail_roundtrip %s\n" % check_mail_roundtrip.__version__), r
    r = _run(["-h"])
    assert r.rc == 0, r
    assert r.stdout.startswith("usage: check_mail_roundtrip "), r
    longs = sorted({s for a in cli.parser()._actions for s in a.option_strings if s.startswith("--")})
    assert len(longs) >= 30, longs
    missing = [o for o in longs if not re.search(r"(?<![\w-])%s(?![\w-])" % re.escape(o), r.stdout)]
    assert not missing, "options not in --help: %s" % missing
    for env in (ENV_IMAP, ENV_SMTP, ENV_STATE, cli.SYSTEM_STATE_DIR):
        assert env in " ".join(r.stdout.split()), env


# -- usage errors: UNKNOWN, exit 3, on stdout -----------------------------------

def _usage_cases(tmp_path):
    ca = str(tmp_path / "ca.pem")
    open(ca, "w").close()
    base = ["-H", "127.0.0.1", "--from", MONITOR]
    missing = str(tmp_path / "nowhere" / "pw")
    return {
        "insecure with ca-file": (
            base + ["--insecure", "--ca-file", ca], {ENV_IMAP: "x"},
            "--insecure and --ca-file exclude each other"),
        "missing ca-file": (
            base + ["--ca-file", str(tmp_path / "missing.pem")], {ENV_IMAP: "x"},
            "--ca-file %s: no such file" % (tmp_path / "missing.pem")),
        "no IMAP password": (
            base, {}, "no IMAP password: give --imap-password-file or set $%s" % ENV_IMAP),
        "smtp-user without password": (
            base + ["--smtp-user", MONITOR], {ENV_IMAP: "x"},
            "--smtp-user needs a password: --smtp-password-file or $%s" % ENV_SMTP),
        "no host": (
            ["--from", MONITOR], {ENV_IMAP: "x"}, "give -H/--host or --smtp-host"),
        "no host for IMAP": (
            ["--from", MONITOR, "--smtp-host", "127.0.0.1"], {ENV_IMAP: "x"}, "give -H/--host or --imap-host"),
        "missing IMAP password file": (
            base + ["--imap-password-file", missing], {ENV_IMAP: "x"},
            "cannot read IMAP password file %s: No such file or directory" % missing),
        "IMAP password file is a directory": (
            base + ["--imap-password-file", str(tmp_path)], {},
            "cannot read IMAP password file %s: Is a directory" % tmp_path),
        "unreadable SMTP password file": (
            base + ["--smtp-user", MONITOR, "--smtp-password-file", missing], {ENV_IMAP: "x"},
            "cannot read SMTP password file %s: No such file or directory" % missing),
        "warning above critical": (
            base + ["-w", "120", "-c", "60"], {ENV_IMAP: "x"},
            "-w/--warning (120s) is above -c/--critical (60s): the warning threshold must not "
            "exceed the critical one"),
        "lost warning above lost critical": (
            base + ["--lost-warning", "3", "--lost-critical", "1"], {ENV_IMAP: "x"},
            "--lost-warning (3) is above --lost-critical (1): the warning threshold must not "
            "exceed the critical one"),
        "stale warning above stale critical": (
            base + ["--stale-warning", "7200", "--stale-critical", "3600"], {ENV_IMAP: "x"},
            "--stale-warning (7200s) is above --stale-critical (3600s): the warning threshold must "
            "not exceed the critical one"),
        "CA file without certificates": (
            base + ["--ca-file", ca], {ENV_IMAP: "x"},
            "--ca-file %s: no certificate in it (expected PEM: -----BEGIN CERTIFICATE-----)" % ca),
        "range that is not a number": (
            base + ["-w", "abc"], {ENV_IMAP: "x"},
            "argument -w/--warning: not a Nagios range: 'abc' (expected [@][START:]END with numbers; "
            "e.g. 120, 10:20, ~:10, @10:20)"),
        "range start above end": (
            base + ["-c", "10:5"], {ENV_IMAP: "x"},
            "argument -c/--critical: not a Nagios range: '10:5' (start 10 must not be greater than "
            "end 5; e.g. 120, 10:20, ~:10, @10:20)"),
    }


USAGE_CASES = [
    "insecure with ca-file", "missing ca-file", "no IMAP password", "smtp-user without password",
    "no host", "no host for IMAP", "missing IMAP password file", "IMAP password file is a directory",
    "unreadable SMTP password file", "warning above critical", "lost warning above lost critical",
    "stale warning above stale critical", "CA file without certificates", "range that is not a number",
    "range start above end",
]


@pytest.mark.parametrize("case", USAGE_CASES)
def test_usage_errors_are_unknown(tmp_path, case):
    argv, env, message = _usage_cases(tmp_path)[case]
    state_dir = tmp_path / "state"
    r = _run(argv + ["--state-dir", str(state_dir)], env=env)
    assert r.rc == 3, r
    assert r.stdout == "MAIL_ROUNDTRIP UNKNOWN - usage error: %s (see --help)\n" % message, r
    assert not state_dir.exists()  # nothing was started


def test_bad_option_value_is_unknown_not_argparse_exit_2(tmp_path):
    r = _run(["-H", "127.0.0.1", "--from", MONITOR, "-t", "1"], env={ENV_IMAP: "x"})
    assert r.rc == 3, r
    assert r.stdout == ("MAIL_ROUNDTRIP UNKNOWN - usage error: argument -t/--timeout: "
                        "must be between 2 and 3600 seconds: '1' (see --help)\n"), r


# -- where the state lives ----------------------------------------------------

def test_state_directory_chain(lab, tmp_path):
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    shutil.copy2(os.path.join(ROOT, "check_mail_roundtrip"), checkout / "check_mail_roundtrip")
    shutil.copytree(os.path.join(ROOT, "lib"), checkout / "lib", symlinks=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    shim = str(checkout / "check_mail_roundtrip")
    check = Checker(lab, tmp_path, MONITOR, None, "imaps", "smtp", "--name", "chain")
    i = check.args.index("--state-dir")
    argv = check.args[:i] + check.args[i + 2:]
    env = {ENV_IMAP: lab.users[MONITOR]}
    stem = file_stem("chain") + ".json"
    explicit, from_env, beside = tmp_path / "explicit", tmp_path / "from-env", checkout / "state"
    real_checkout_state = os.path.join(ROOT, "state", stem)
    assert not os.path.exists(real_checkout_state)

    r = _run(argv + ["--state-dir", str(explicit)], env=dict(env, **{ENV_STATE: str(from_env)}), command=shim)
    assert r.line == FIRST, r  # --state-dir wins over the environment and the checkout
    assert _state_files(explicit) == [stem]
    assert not from_env.exists() and not beside.exists()

    r = _run(argv, env=dict(env, **{ENV_STATE: str(from_env)}), command=shim)
    assert r.line == FIRST, r  # then $CHECK_MAIL_ROUNDTRIP_STATE_DIR
    assert _state_files(from_env) == [stem]
    assert not beside.exists()

    r = _run(argv, env=env, command=shim)
    assert r.line == FIRST, r  # then state/ beside the shim of a checkout
    assert _state_files(beside) == [stem]
    assert os.stat(beside).st_mode & 0o777 == 0o700
    assert os.stat(beside / "secret").st_mode & 0o777 == 0o600
    assert not os.path.exists(real_checkout_state)


def test_installed_entry_point_defaults_to_var_lib(monkeypatch, tmp_path):
    monkeypatch.delenv(ENV_STATE, raising=False)
    monkeypatch.setenv(ENV_IMAP, "x")
    argv = ["-H", "127.0.0.1", "--from", MONITOR]
    assert cli.settings_from(cli.parser().parse_args(argv)).state_dir == "/var/lib/check_mail_roundtrip"
    monkeypatch.setenv(ENV_STATE, str(tmp_path / "env"))
    assert cli.settings_from(cli.parser().parse_args(argv), str(tmp_path / "co")).state_dir == str(tmp_path / "env")
    assert cli.settings_from(cli.parser().parse_args(argv + ["--state-dir", "/x"]), "/co").state_dir == "/x"


# -- --secret-file -------------------------------------------------------------

@pytest.mark.parametrize("mode, who", [(0o640, "its group"), (0o604, "others")])
def test_a_secret_file_others_can_read_is_refused(lab, tmp_path, mode, who):
    secret_file = tmp_path / "shared.key"
    secret_file.write_text("0123456789abcdef" * 4 + "\n")
    os.chmod(secret_file, mode)
    check = Checker(lab, tmp_path, MONITOR, None, "imaps", "smtp", "--secret-file", str(secret_file))
    r = check()
    assert r.rc == 3 and r.line == (
        "MAIL_ROUNDTRIP UNKNOWN - secret file %s can be read by %s (mode %04o): anyone who can read it can "
        "forge probes; make it the owner's alone: chmod 600 %s" % (secret_file, who, mode, secret_file)), r
    assert lab.count(MONITOR) == (0, 0)  # nothing was sent


def test_secret_file_is_created_and_used(lab, tmp_path):
    name = "cli-secret"
    keys = tmp_path / "keys"
    keys.mkdir()
    secret_file = keys / "probe.key"
    check = Checker(lab, tmp_path, MONITOR, None, "imaps", "smtp", "--name", name,
                    "--secret-file", str(secret_file))
    r = check()
    assert r.line == FIRST, r
    assert os.stat(secret_file).st_mode & 0o777 == 0o600
    assert not os.path.exists(os.path.join(check.state_dir, "secret"))
    secret = secret_file.read_bytes().strip()
    assert len(secret) >= 32
    lab.wait_for(MONITOR, 1)
    r = check()
    assert _returned_line().fullmatch(r.line), r
    # A probe of this profile signed with another secret: ignored, left alone.
    now = time.time()
    forged = probe_format.new_probe(name, now - 1)
    msg = probe_format.build_message(forged, b"a different secret, 32 bytes long", MONITOR, MONITOR, "lab", now - 1)
    conn = _imap(lab)
    try:
        typ, data = conn.append("INBOX", "", imaplib.Time2Internaldate(now), msg.as_bytes())
        assert typ == "OK", data
    finally:
        conn.logout()
    lab.wait_for(MONITOR, 2)  # the forgery and the probe run 2 sent
    r = check("-v")
    assert _returned_line().fullmatch(_full(r)), r
    assert re.search(r"^message UID \d+ ignored: bad signature \(forged or tampered token\)$", r.stdout, re.M), r
    assert "probe %s" % forged.probe_id not in r.stdout
    left = lab.messages(MONITOR)
    assert [m["message_id"] for m in left if forged.probe_id in m["message_id"]], left
    assert secret_file.read_bytes().strip() == secret  # never rewritten
    st = _state(check, name)
    assert st["totals"]["returned"] == 2 and forged.probe_id not in st["counted"]


# -- --imap-folder, --imap-user, --imap-password-file ------------------------------

def test_imap_folder_other_than_inbox(lab, tmp_path):
    check = Checker(lab, tmp_path, MONITOR, None, "imaps", "smtp", "--name", "junkfolder",
                    "--imap-folder", "Junk")
    lab.junk()
    r = check()
    assert r.line == FIRST, r
    lab.wait_for(MONITOR, 1, folder="Junk")
    r = check()
    assert _returned_line().fullmatch(r.line), r
    lab.wait_for(MONITOR, lambda msgs: len(msgs) == 1, folder="Junk")  # the first probe is gone, the next is there
    assert lab.messages(MONITOR) == []


def test_imap_login_as_another_user_with_a_password_file(lab, tmp_path):
    pwfile = tmp_path / "imap-password"
    pwfile.write_text(lab.users[OTHER] + "\n")
    pwfile.chmod(0o600)
    check = Checker(lab, tmp_path, MONITOR, OTHER, "imaps", "smtp", "--name", "otheruser",
                    "--imap-user", OTHER, "--imap-password-file", str(pwfile))
    check.env[ENV_IMAP] = "not the password"  # the file wins over the environment
    r = check()
    assert r.line == FIRST, r
    lab.wait_for(OTHER, 1)
    r = check()
    assert _returned_line().fullmatch(r.line), r
    lab.wait_for(OTHER, lambda msgs: len(msgs) == 1)
    assert lab.messages(MONITOR) == []


# -- the default profile name ----------------------------------------------------

def test_default_profile_name_holds_no_password(lab, tmp_path):
    smtp_pw, imap_pw = lab.users[OTHER], lab.users[MONITOR]
    assert smtp_pw != imap_pw
    pwfile = tmp_path / "smtp-password"
    pwfile.write_text(smtp_pw + "\n")
    pwfile.chmod(0o600)
    check = Checker(lab, tmp_path, MONITOR, None, "imaps", "submission",
                    "--smtp-user", OTHER, "--smtp-password-file", str(pwfile), "--keep")
    r = check()
    assert r.line == FIRST, r
    profile = "%s>%s smtp:%s:%d imap:%s:%d/INBOX" % (
        MONITOR, MONITOR, lab.host, lab.ports["submission"], lab.host, lab.ports["imaps"])
    files = sorted(os.listdir(check.state_dir))
    assert file_stem(profile) + ".json" in files, files
    lab.wait_for(MONITOR, 1)
    r = check()
    assert _returned_line().fullmatch(r.line), r  # --keep: counted, left in the mailbox
    assert _state(check, profile)["profile"] == profile
    secrets = [(what, form) for pw in (smtp_pw, imap_pw) for what, form in (
        ("password", pw.encode()), ("base64 password", base64.b64encode(pw.encode())))]
    for name in os.listdir(check.state_dir):
        assert not any(pw in name for pw in (smtp_pw, imap_pw)), name
        with open(os.path.join(check.state_dir, name), "rb") as f:
            content = f.read()
        for what, form in secrets:
            assert form not in content, (what, name)
    blocks = _headers(lab)
    assert blocks and all(b"Subject:" in b for b in blocks), blocks
    for block in blocks:
        for what, form in secrets:
            assert form not in block, (what, block)


@pytest.mark.parametrize("given, warning, critical", [
    ([], 120, 600),
    (["-c", "60"], 60, 60),          # the default -w gives way to a lower -c
    (["-w", "900"], 900, 900),       # the default -c gives way to a higher -w
    (["-w", "10", "-c", "20"], 10, 20),
    (["-c", "900"], 120, 900),
])
def test_default_thresholds_give_way_to_explicit_ones(given, warning, critical):
    args = cli.parser().parse_args(["-H", "mx", "--from", MONITOR, "--lost-after", "7200", *given])
    s = cli.settings_from(args, secrets={"imap-password": "x"})
    assert (s.warning.end, s.critical.end) == (warning, critical)


def test_smtp_helo_names_the_client_in_ehlo(lab, tmp_path):
    """--smtp-helo NAME greets with NAME (the lab's Postfix logs it); the default is this host's FQDN."""
    check = Checker(lab, tmp_path)
    r = check("-vvv", "--smtp-helo", "probe-sender.example.net")
    assert r.rc == 0, r
    assert re.search(r"^SMTP C: ehlo probe-sender\.example\.net$", r.stdout, re.M), r.stdout
    lab.wait_for(MONITOR, 1)
    conn = _imap(lab)
    try:
        conn.select("INBOX", readonly=True)
        _typ, data = conn.fetch("1", "(BODY.PEEK[HEADER.FIELDS (RECEIVED)])")
    finally:
        conn.logout()
    assert b"from probe-sender.example.net (localhost [127.0.0.1])" in data[0][1], data  # Postfix's stamp
    r = check("-vvv")
    fqdn = socket.getfqdn()
    expected = fqdn if "." in fqdn else socket.gethostname()
    assert re.search(r"^SMTP C: ehlo %s$" % re.escape(expected), r.stdout, re.M), r.stdout
