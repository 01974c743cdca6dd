"""The fast tier: a mail system in memory, and the check run in-process against it.

    from tests.memlab import MailSystem, MemCheck

    mail = MailSystem()                        # a fake clock, an MTA, mailboxes (system.py)
    check = MemCheck(mail, tmp_path, "-w", "5")
    r = check()                                # the real options, nagiosplugin, in-process (run.py)
    assert r.full_line == "MAIL_ROUNDTRIP OK - first probe sent, 1 in flight | ..."
    mail.clock.advance(60)                     # time passes only when told (clock.py)

The probes are the real mails the check builds; the collector (collector.py)
hands back their real header bytes.  The protocols themselves (IMAP, POP3,
SMTP, TLS, the servers' words) are proved against the lab and the fault
servers; here the check's logic is, with exact status lines.
"""

from .clock import START, FakeClock
from .run import MONITOR, PASSWORD, SECRET, MemCheck, secret_file, sent_id
from .system import Killed, MailSystem, Relay, plain_mail, probe_mail, probe_text

__all__ = ["START", "FakeClock", "MONITOR", "PASSWORD", "SECRET", "MemCheck", "secret_file", "sent_id",
           "Killed", "MailSystem", "Relay", "plain_mail", "probe_mail", "probe_text"]
