"""Loopback mail lab (private Postfix + Dovecot) for the test suite.

    from tests.lab import MailLab
    with MailLab() as lab:
        lab.send(to="monitor@lab.test", subject="hello")
        lab.wait_for("monitor@lab.test", 1)

Command line: python3 -m tests.lab --help
"""

from .lab import DEFAULT_DIR, DOMAIN, HOST, PORT_NAMES, LabError, MailLab, install

__all__ = ["DEFAULT_DIR", "DOMAIN", "HOST", "PORT_NAMES", "LabError", "MailLab", "install"]
