"""A Python that cannot load the plugin (a requirement missing, a broken
virtualenv) gives a status line and UNKNOWN, never a traceback with exit 1;
the piped reflector asks Postfix to retry (75)."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# the child finds the package, but nagiosplugin and imapclient cannot be imported
BLOCK = "import sys; sys.modules['nagiosplugin'] = None; sys.modules['imapclient'] = None; "


def run(code, *args):
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "lib"))
    return subprocess.run([sys.executable, "-c", BLOCK + code, *args], capture_output=True, text=True,
                          timeout=30, env=env, cwd=ROOT)


def test_the_check_without_its_requirements_is_unknown_with_the_reason():
    r = run("from check_mail_roundtrip.entry import check; check()", "-H", "mail.example.org")
    assert r.returncode == 3, r
    assert r.stdout.splitlines()[0] == (
        "MAIL_ROUNDTRIP UNKNOWN - cannot load the check with %s: ModuleNotFoundError: import of "
        "nagiosplugin halted; None in sys.modules (install the plugin into a virtualenv made with "
        "/usr/bin/python3 as README's install section shows)" % sys.executable), r
    assert "Traceback" not in r.stdout + r.stderr, r


def test_the_checkout_shim_uses_the_safe_entry():
    shim = os.path.join(ROOT, "check_mail_roundtrip")
    r = run("import runpy; sys.argv = [%r, '-H', 'x']; runpy.run_path(%r, run_name='__main__')" % (shim, shim))
    assert r.returncode == 3 and r.stdout.startswith("MAIL_ROUNDTRIP UNKNOWN - cannot load the check"), r
    assert "Traceback" not in r.stdout + r.stderr, r


def test_python_dash_m_uses_the_safe_entry():
    r = run("import runpy; runpy.run_module('check_mail_roundtrip', run_name='__main__')")
    assert r.returncode == 3 and r.stdout.startswith("MAIL_ROUNDTRIP UNKNOWN - cannot load the check"), r


def test_the_piped_reflector_without_its_requirements_asks_for_a_retry():
    r = run("sys.argv[1:] = ['pipe']; from check_mail_roundtrip.entry import reflector; reflector()")
    assert r.returncode == 75, r
    assert r.stderr.startswith("mail_roundtrip_reflector: cannot work: cannot load the reflector with "), r
    assert "Traceback" not in r.stdout + r.stderr, r


def test_the_polling_reflector_without_its_requirements_fails_plainly():
    r = run("sys.argv[1:] = ['poll']; from check_mail_roundtrip.entry import reflector; reflector()")
    assert r.returncode == 1 and "Traceback" not in r.stderr and "cannot load the reflector" in r.stderr, r


def test_the_installed_console_scripts_point_at_the_safe_entry():
    text = open(os.path.join(ROOT, "setup.cfg")).read()
    assert "check_mail_roundtrip = check_mail_roundtrip.entry:check" in text
    assert "mail_roundtrip_reflector = check_mail_roundtrip.entry:reflector" in text


def test_an_internal_error_before_the_check_starts_is_one_unknown_line():
    r = run_with_requirements("import check_mail_roundtrip.cli as cli; "
                              "cli.main = lambda **kw: (_ for _ in ()).throw(RuntimeError('settings broke')); "
                              "from check_mail_roundtrip.entry import check; check()")
    assert (r.returncode, r.stdout) == (3, "MAIL_ROUNDTRIP UNKNOWN - internal error: RuntimeError: settings broke\n"), r
    assert "Traceback" not in r.stderr, r


def test_an_internal_error_of_the_polling_reflector_is_one_line_and_of_the_piped_one_a_drop():
    boom = ("import check_mail_roundtrip.reflector as r; "
            "r.main = lambda: (_ for _ in ()).throw(RuntimeError('poll broke')); "
            "from check_mail_roundtrip.entry import reflector; sys.argv[1:] = [%r]; reflector()")
    polled, piped = run_with_requirements(boom % "poll"), run_with_requirements(boom % "pipe")
    assert polled.returncode == 1 and polled.stderr == (
        "mail_roundtrip_reflector: stopped after an internal error: RuntimeError: poll broke\n"), polled
    assert piped.returncode == 0 and piped.stderr == (
        "mail_roundtrip_reflector: mail dropped after an internal error: RuntimeError: poll broke\n"), piped


def run_with_requirements(code):
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "lib"))
    return subprocess.run([sys.executable, "-c", "import sys; " + code], capture_output=True, text=True,
                          timeout=30, env=env, cwd=ROOT)


def test_the_report_that_cannot_load_says_why_in_one_line_and_exits_1():
    r = run("sys.modules['check_mail_roundtrip.report_cli'] = None; "
            "from check_mail_roundtrip.entry import report; report()", "--help")
    assert (r.returncode, r.stdout) == (1, ""), r
    assert r.stderr == (
        "mail_roundtrip_report: cannot load the report with %s: ModuleNotFoundError: import of "
        "check_mail_roundtrip.report_cli halted; None in sys.modules (install the plugin into a virtualenv made "
        "with /usr/bin/python3 as README's install section shows)\n" % sys.executable), r


def test_the_report_needs_neither_nagiosplugin_nor_imapclient():
    shim = os.path.join(ROOT, "mail_roundtrip_report")
    r = run("import runpy; sys.argv = [%r, '--version']; runpy.run_path(%r, run_name='__main__')" % (shim, shim))
    assert (r.returncode, r.stdout.split()[0], r.stderr) == (0, "mail_roundtrip_report", ""), r


def test_an_internal_error_of_the_report_is_one_line_and_exit_1():
    r = run_with_requirements("import check_mail_roundtrip.report_cli as c; "
                              "c.main = lambda: (_ for _ in ()).throw(RuntimeError('page broke')); "
                              "from check_mail_roundtrip.entry import report; report()")
    assert (r.returncode, r.stdout, r.stderr) == (
        1, "", "mail_roundtrip_report: internal error: RuntimeError: page broke\n"), r


def test_the_installed_report_command_points_at_the_safe_entry():
    text = open(os.path.join(ROOT, "setup.cfg")).read()
    assert "mail_roundtrip_report = check_mail_roundtrip.entry:report" in text


def plain(code, *args):
    """*code* run by a fresh Python that has the plugin's requirements (output piped, as Nagios reads it)."""
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "lib"), COLUMNS="100")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60, env=env,
                          cwd=ROOT, stdin=subprocess.DEVNULL)


def test_a_run_ends_with_its_whole_output_piped_and_its_exit_code_without_the_interpreters_teardown(
        tmp_path, monkeypatch):
    """--help (about 20 KB, argparse's exit 0) and a usage error (exit 3) arrive whole through
    a pipe; exit handlers run (logging's flush among them); the teardown that frees every
    object one by one does not (an object's __del__ never runs)."""
    mark = tmp_path / "atexit"
    code = ("import atexit, sys\n"
            "class Torn:\n"
            "    def __del__(self): print('torn down', file=sys.stderr)\n"
            "kept = Torn()\n"
            "atexit.register(lambda: open(%r, 'w').write('ran'))\n"
            "from check_mail_roundtrip.entry import check; check()" % str(mark))
    r = plain(code, "--help")
    from check_mail_roundtrip import cli
    monkeypatch.setenv("COLUMNS", "100")
    assert (r.returncode, r.stdout, r.stderr) == (0, cli.parser().format_help(), ""), r
    assert len(r.stdout) > 10000 and mark.read_text() == "ran"
    mark.unlink()
    r = plain(code, "-H", "mail.example.org")
    assert (r.returncode, r.stdout, r.stderr) == (
        3, "MAIL_ROUNDTRIP UNKNOWN - usage error: --from is required (see --help)\n", ""), r
    assert mark.read_text() == "ran"


@pytest.mark.parametrize("code, status, stderr", [
    (None, 0, ""), (0, 0, ""), (2, 2, ""), (3, 3, ""), (258, 2, ""), (-1, 255, ""),
    ("'cannot go on'", 1, "cannot go on\n")])
def test_leave_exits_as_sys_exit_would(code, status, stderr):
    r = plain("import sys; print('line'); from check_mail_roundtrip.entry import leave; leave(%s)" % (code,))
    assert (r.returncode, r.stdout, r.stderr) == (status, "line\n", stderr), r
    r = plain("import sys; print('line'); sys.exit(%s)" % (code,))
    assert (r.returncode, r.stdout, r.stderr) == (status, "line\n", stderr), r
