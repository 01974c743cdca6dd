"""README's "Install on a monitoring server" does what it promises, run as written.

The `installed_plugin` fixture (tests/lab/plugin.py) runs the section's
install block as root with bash -e; these tests check the result: the plugin
runs as user nagios, the state directory and the password file belong to
nagios with the promised modes, the password file holds the line `read` was
given, and the section's "first run" command, pointed at the mail lab, sends
the first probe and then reports the round trip.
"""

import grp
import os
import pwd
import stat
import subprocess

from tests.lab import plugin

TIMEOUT = 90


def run(argv, timeout=TIMEOUT):
    """Run *argv* with the clean root environment; the CompletedProcess."""
    return subprocess.run(argv, env=dict(plugin.ROOT_ENV), capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=timeout)


def as_nagios(*argv):
    return run(["runuser", "-u", plugin.MONITOR_USER, "--", *argv])


def owner_and_mode(path):
    st = os.stat(path)
    return (pwd.getpwuid(st.st_uid).pw_name, grp.getgrgid(st.st_gid).gr_name,
            stat.S_IMODE(st.st_mode))


def lab_argv(argv, lab, user):
    """README's command with `-H mail.example.org` aimed at the lab's host, ports and CA."""
    i = argv.index("-H")
    assert argv[i + 1] == "mail.example.org", argv
    lab_args = ["-H", lab.host, "--smtp-port", str(lab.ports["smtp"]),
                "--imap-port", str(lab.ports["imaps"]), "--ca-file", lab.ca_file]
    argv = argv[:i] + lab_args + argv[i + 2:]
    return [user if a == "monitor@example.org" else a for a in argv]


def test_plugin_runs_as_nagios(installed_plugin):
    assert installed_plugin == plugin.PLUGIN
    version = as_nagios(installed_plugin, "--version")
    assert version.returncode == 0, version
    assert version.stdout.startswith("check_mail_roundtrip "), version
    helped = as_nagios(installed_plugin, "--help")
    assert helped.returncode == 0, helped
    # "the state directory (the installed command's default)"
    assert plugin.STATE_DIR in " ".join(helped.stdout.split()), helped.stdout


def test_state_dir_belongs_to_nagios(installed_plugin):
    assert owner_and_mode(plugin.STATE_DIR) == ("nagios", "nagios", 0o700)


def test_password_file_holds_the_line_read_was_given(installed_plugin):
    assert owner_and_mode(os.path.dirname(plugin.PASSWORD_FILE)) == ("root", "nagios", 0o750)
    assert owner_and_mode(plugin.PASSWORD_FILE) == ("nagios", "nagios", 0o600)
    with open(plugin.PASSWORD_FILE) as fh:
        assert fh.read() == plugin.TEST_PASSWORD + "\n"
    # it came through stdin: no command of the block (bash's argv) holds it
    assert plugin.TEST_PASSWORD not in plugin.install_script()


def test_first_run_then_round_trip(installed_plugin, lab):
    user = "monitor@lab.test"
    argv = lab_argv(plugin.first_run_argv(), lab, user)
    assert argv[:4] == ["runuser", "-u", "nagios", "--"] and argv[4] == installed_plugin, argv
    with plugin.new_state_files_removed(), plugin.password_in_file(lab.users[user]):
        first = run(argv)
        assert first.returncode == 0, first
        assert first.stdout.startswith("MAIL_ROUNDTRIP OK - first probe sent, 1 in flight |"), first
        lab.wait_for(user, 1, timeout=20)
        second = run(argv)
        owners = {name: owner_and_mode(os.path.join(plugin.STATE_DIR, name))[0]
                  for name in os.listdir(plugin.STATE_DIR)}
    assert second.returncode == 0, second
    assert second.stdout.startswith("MAIL_ROUNDTRIP OK - round trip "), second
    assert " rtt=" in second.stdout, second
    # run as nagios, as README says: nothing of root's in the state directory
    assert set(owners.values()) == {"nagios"}, owners
