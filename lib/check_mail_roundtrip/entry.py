"""Entry points of the commands, safe against a package that cannot load.

pip's console scripts and the checkout shims call :func:`check`,
:func:`reflector` and :func:`report`.  They import the commands (and with them nagiosplugin and
imapclient) only inside, so a Python that lacks a requirement, or a broken
virtualenv, ends as a plain status line with exit 3 (UNKNOWN), never as a
traceback with exit 1.  The reflector says why on stderr, like its other
"cannot work" failures, and piped it exits 75 (Postfix keeps the mail and
retries once the installation is fixed); the report says so on stderr and
exits 1.  Only the standard library is imported here.
"""

from __future__ import annotations

import gc
import sys

TYPE_CHECKING = False  # typing is loaded after gc.disable() below, with the rest (its names are for type checkers)
if TYPE_CHECKING:
    from typing import NoReturn, Optional

UNKNOWN = 3
EX_OK, EX_FAIL, EX_TEMPFAIL = 0, 1, 75  # the reflector's "done", "cannot work" and "try again later"
FIX = "install the plugin into a virtualenv made with /usr/bin/python3 as README's install section shows"


def _why(exc: BaseException) -> str:
    words = " ".join(str(exc).split()) or type(exc).__name__
    return "%s: %s" % (type(exc).__name__, words[:300].replace("|", "/"))


def cannot_load(exc: BaseException) -> NoReturn:
    """Print the check's UNKNOWN line for a failed import and exit 3."""
    print("MAIL_ROUNDTRIP UNKNOWN - cannot load the check with %s: %s (%s)" % (sys.executable, _why(exc), FIX))
    sys.stdout.flush()
    sys.exit(UNKNOWN)


def check(checkout_state_dir: Optional[str] = None) -> None:
    """The check_mail_roundtrip command."""
    gc.disable()  # loading the modules makes next to no garbage: collecting would only cost time
    try:
        from .cli import main
    except Exception as exc:  # noqa: BLE001  (whatever breaks the import must become a status line)
        cannot_load(exc)
    finally:
        gc.freeze()  # what is loaded stays: later collections need not look at it again
        gc.enable()
    try:
        main(checkout_state_dir=checkout_state_dir)
    except SystemExit as done:  # the end of every run: nagiosplugin's exit with the state's code, or a usage error
        leave(done.code)
    except Exception as exc:  # noqa: BLE001  (nagiosplugin guards the check; this guards what comes before it)
        from .redact import redact
        print(redact("MAIL_ROUNDTRIP UNKNOWN - internal error: %s" % _why(exc)))
        sys.exit(UNKNOWN)


def leave(code: object) -> NoReturn:
    """End the process as ``sys.exit(code)`` would, without the interpreter's teardown.

    The exit handlers run (``atexit``: logging's flush among them) and the
    output is flushed; what is skipped is freeing, one by one, every object
    the run made and collecting the garbage among them, work the end of the
    process makes moot: about 17 M instructions, 4 % of a steady-state run
    (docs/explanation/cost.md).  By then the run has written and closed
    everything it writes (the state file renamed into place, the history line
    appended, the sockets said goodbye to); its only threads are daemon threads
    (name look-ups bounded by the budget), which a usual exit does not wait for
    either."""
    import atexit
    import os

    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:  # as sys.exit: a message goes to stderr, the status is 1
        print(code, file=sys.stderr)
        status = 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # the reader went away, or the stream is closed: nothing to keep
            pass
    os._exit(status & 0xFF)


def reflector() -> None:
    """The mail_roundtrip_reflector command."""
    piped = sys.argv[1:2] == ["pipe"]
    try:
        from .reflector import main
    except Exception as exc:  # noqa: BLE001
        sys.stderr.write("mail_roundtrip_reflector: cannot work: cannot load the reflector with %s: %s (%s)\n"
                         % (sys.executable, _why(exc), FIX))
        sys.exit(EX_TEMPFAIL if piped else EX_FAIL)
    try:
        main()
    except KeyboardInterrupt:  # poll --loop stopped by hand
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001  (pipe mode guards itself; this is the last resort)
        from .redact import redact
        sys.stderr.write(redact("mail_roundtrip_reflector: %s after an internal error: %s"
                                % ("mail dropped" if piped else "stopped", _why(exc))) + "\n")
        sys.exit(EX_OK if piped else EX_FAIL)  # piped: a bounce would go to whoever the sender claims


def report() -> None:
    """The mail_roundtrip_report command."""
    try:
        from .report_cli import main
    except Exception as exc:  # noqa: BLE001
        sys.stderr.write("mail_roundtrip_report: cannot load the report with %s: %s (%s)\n"
                         % (sys.executable, _why(exc), FIX))
        sys.exit(EX_FAIL)
    try:
        code = main()
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001  (the last resort: one line, never a traceback)
        sys.stderr.write("mail_roundtrip_report: internal error: %s\n" % _why(exc))
        sys.exit(EX_FAIL)
    sys.exit(code)
