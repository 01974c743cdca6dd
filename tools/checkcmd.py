"""The check command of this checkout, as demo/ and benchmarks/ run it.

    require("demo", "sudo bash demo/run")   # exits with a sentence if it cannot run
    p = run(["-H", host, ...], env=env)    # a CompletedProcess (text)
    if not is_result(p): ...                # a traceback, not a check result

The check runs with this interpreter (sys.executable), which must have the
check's libraries (nagiosplugin, imapclient): the virtualenv .venv that
tools/bootstrap makes has them.
"""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMAND = os.path.join(ROOT, "check_mail_roundtrip")
STATES = {0: "OK", 1: "WARNING", 2: "CRITICAL", 3: "UNKNOWN"}


def run(args, env=None, timeout=90):
    """One invocation of the check with *args*; stdin closed, output captured."""
    return subprocess.run([sys.executable, COMMAND, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          timeout=timeout)


def is_result(p):
    """Did the invocation end with a check result (not e.g. a traceback)?"""
    return p.returncode in STATES and p.stdout.startswith("MAIL_ROUNDTRIP ")


def output(p, lines=12):
    """The tail of what the invocation printed, stdout and stderr, indented."""
    text = (p.stdout + p.stderr).strip().splitlines()[-lines:]
    return "\n".join("    " + line for line in text) or "    (no output)"


def require(prog, remedy):
    """Exit with a sentence unless the check can run here (tried: --version)."""
    p = run(["--version"], timeout=60)
    if p.returncode != 0:
        sys.exit("%s: the check cannot run with this Python (%s), exit code %d:\n%s\n"
                 "%s: `%s` installs what it needs in a virtualenv (.venv) and runs it."
                 % (prog, sys.executable, p.returncode, output(p), prog, remedy))
