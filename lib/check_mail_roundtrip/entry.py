"""Entry points of the two commands, safe against a package that cannot load.

pip's console scripts and the checkout shims call :func:`check` and
:func:`reflector`.  They import the commands (and with them nagiosplugin and
imapclient) only inside, so a Python that lacks a requirement, or a broken
virtualenv, ends as a plain status line with exit 3 (UNKNOWN), never as a
traceback with exit 1.  The reflector says why on stderr, like its other
"cannot work" failures, and piped it exits 75 (Postfix keeps the mail and
retries once the installation is fixed).  Only the standard library is imported here.
"""

import sys
from typing import NoReturn, Optional

UNKNOWN = 3
EX_FAIL, EX_TEMPFAIL = 1, 75  # the reflector's "cannot work" and "try again later"
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
    try:
        from .cli import main
    except Exception as exc:  # noqa: BLE001  (whatever breaks the import must become a status line)
        cannot_load(exc)
    main(checkout_state_dir=checkout_state_dir)


def reflector() -> None:
    """The mail_roundtrip_reflector command."""
    try:
        from .reflector import main
    except Exception as exc:  # noqa: BLE001
        piped = sys.argv[1:2] == ["pipe"]
        sys.stderr.write("mail_roundtrip_reflector: cannot work: cannot load the reflector with %s: %s (%s)\n"
                         % (sys.executable, _why(exc), FIX))
        sys.exit(EX_TEMPFAIL if piped else EX_FAIL)
    main()
