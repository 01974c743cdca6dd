"""--extra-opts: options from an ini file, as the monitoring-plugins define it.

The parser rules are unit-tested; the whole feature runs through the real
command against the lab (the options in the file must reach the servers).
"""

import os

import pytest

from check_mail_roundtrip import extraopts
from check_mail_roundtrip.extraopts import ExtraOptsError
from tests.checkrun import Checker
from tests.test_cli import _run

FLAGS = {"keep", "insecure", "v", "verbose"}


def test_section_lines_become_options_in_file_order():
    text = ("# comment\n; another\n[other]\nwarning = 1\n\n"
            "[check_mail_roundtrip]\n  warning = 120 \nc=600\nkeep =\nv =\nfrom = a@b\n")
    pairs = extraopts.parse_section(text, "check_mail_roundtrip")
    assert pairs == [("warning", "120"), ("c", "600"), ("keep", None), ("v", None), ("from", "a@b")]
    assert extraopts.to_args(pairs, FLAGS) == ["--warning=120", "-c600", "--keep", "-v", "--from=a@b"]


@pytest.mark.parametrize("text, message", [
    ("[check_mail_roundtrip]\nwarning\n", "line 2: expected 'option = value'"),
    ("warning = 1\n[check_mail_roundtrip]\n", "line 1: an option before the first [section]"),
    ("[other]\nwarning = 1\n", "no section [check_mail_roundtrip] in f.ini"),
    ("[check_mail_roundtrip\n", "line 1: a section header must end with ']'"),
    ("[check_mail_roundtrip]\n= 3\n", "line 2: expected 'option = value'"),
])
def test_malformed_files_are_refused(text, message):
    with pytest.raises(ExtraOptsError, match=message.replace("[", r"\[").replace("]", r"\]")):
        extraopts.parse_section(text, "check_mail_roundtrip", "f.ini")


def test_flags_take_yes_or_no_and_values_are_required():
    assert extraopts.to_args([("keep", "yes"), ("insecure", "no")], FLAGS) == ["--keep"]
    with pytest.raises(ExtraOptsError, match="takes no value"):
        extraopts.to_args([("keep", "120")], FLAGS)
    with pytest.raises(ExtraOptsError, match="needs a value"):
        extraopts.to_args([("warning", None)], FLAGS)


def test_locator_and_default_file_search(tmp_path):
    assert extraopts.split_locator("") == ("check_mail_roundtrip", None)
    assert extraopts.split_locator("mail@/etc/x.ini") == ("mail", "/etc/x.ini")
    assert extraopts.split_locator("@/etc/x.ini") == ("check_mail_roundtrip", "/etc/x.ini")
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    (second / "plugins.ini").write_text("")
    env = {"NAGIOS_CONFIG_PATH": "%s:%s" % (first, second)}
    assert extraopts.default_file(env) == str(second / "plugins.ini")
    (first / "nagios-plugins.ini").write_text("")
    assert extraopts.default_file(env) == str(first / "nagios-plugins.ini")
    assert extraopts.default_file(dict(env, MP_CONFIG_FILE="/x.ini")) == "/x.ini"


def test_file_options_come_first_so_the_command_line_wins(tmp_path):
    ini = tmp_path / "p.ini"
    ini.write_text("[mrt]\nwarning = 5\ncritical = 50\n")
    argv, secrets = extraopts.expand(["-w", "7", "--extra-opts", "mrt@%s" % ini, "-v"], FLAGS, {})
    assert argv == ["--warning=5", "--critical=50", "-w", "7", "-v"] and secrets == {}


def test_passwords_only_in_a_file_its_owner_alone_can_read(tmp_path):
    ini = tmp_path / "p.ini"
    ini.write_text("[check_mail_roundtrip]\nimap-password = s3cret\nwarning = 5\n")
    os.chmod(ini, 0o640)
    with pytest.raises(ExtraOptsError) as err:
        extraopts.expand(["--extra-opts=@%s" % ini], FLAGS, {})
    assert str(err.value) == ("%s holds imap-password but is readable by others (mode 0640): chmod 600 %s"
                              % (ini, ini))
    os.chmod(ini, 0o600)
    argv, secrets = extraopts.expand(["--extra-opts=@%s" % ini], FLAGS, {})
    assert argv == ["--warning=5"] and secrets == {"imap-password": "s3cret"}


# -- the real command ---------------------------------------------------------------------------

def test_a_whole_configuration_from_an_ini_file_against_the_lab(lab, tmp_path):
    """Servers, ports, CA, thresholds and the IMAP password all from the file."""
    ini = tmp_path / "mrt.ini"
    ini.write_text(
        "[lab]\nhost = {host}\nsmtp-port = {smtp}\nimap-port = {imaps}\nca-file = {ca}\n"
        "from = monitor@lab.test\nstate-dir = {state}\nwarning = 30\ncritical = 60\n"
        "imap-password = {pw}\n".format(host=lab.host, smtp=lab.ports["smtp"], imaps=lab.ports["imaps"],
                                        ca=lab.ca_file, state=tmp_path / "state",
                                        pw=lab.users["monitor@lab.test"]))
    os.chmod(ini, 0o600)
    r = _run(["--extra-opts", "lab@%s" % ini])
    assert (r.rc, r.line) == (0, "MAIL_ROUNDTRIP OK - first probe sent, 1 in flight | "
                                 "junk=0;;;0 lost=0;;;0 oldest_pending=0.0s;30;60;0 pending=1;;;0"), r
    lab.wait_for("monitor@lab.test", 1)
    r = _run(["--extra-opts=lab@%s" % ini, "-c", "90"])  # the command line wins
    assert r.rc == 0 and "rtt=" in r.line and ";30;90;0" in r.line, r


def test_password_sources_file_option_then_ini_then_environment(lab, tmp_path):
    """--imap-password-file wins over imap-password in the ini file, which wins over the environment."""
    check = Checker(lab, tmp_path)
    ini = tmp_path / "pw.ini"
    ini.write_text("[check_mail_roundtrip]\nimap-password = wrong-from-ini\n")
    os.chmod(ini, 0o600)
    good = tmp_path / "good"
    good.write_text(lab.users["monitor@lab.test"] + "\n")
    good.chmod(0o600)
    r = check("--extra-opts=@%s" % ini)  # the environment holds the right password: the ini wins
    assert r.rc == 2 and r.line.startswith("MAIL_ROUNDTRIP CRITICAL - IMAP login failed: "), r
    r = check("--extra-opts=@%s" % ini, "--imap-password-file", str(good))
    assert r.rc == 0, r


def test_a_world_readable_file_with_a_password_is_unknown(tmp_path):
    ini = tmp_path / "open.ini"
    ini.write_text("[check_mail_roundtrip]\nimap-password = s3cret\n")
    os.chmod(ini, 0o644)
    r = _run(["-H", "127.0.0.1", "--from", "a@b", "--extra-opts=@%s" % ini])
    assert (r.rc, r.stdout) == (3, "MAIL_ROUNDTRIP UNKNOWN - usage error: --extra-opts: %s holds "
                                   "imap-password but is readable by others (mode 0644): chmod 600 %s\n"
                                % (ini, ini)), r
    assert "s3cret" not in r.stdout + r.stderr


def test_a_missing_section_is_unknown(tmp_path):
    ini = tmp_path / "x.ini"
    ini.write_text("[something_else]\nwarning = 1\n")
    r = _run(["--extra-opts", "mail@%s" % ini])
    assert (r.rc, r.stdout) == (3, "MAIL_ROUNDTRIP UNKNOWN - usage error: --extra-opts: "
                                   "no section [mail] in %s\n" % ini), r
