"""Command line: options -> Settings -> one nagiosplugin check run.

Usage and configuration errors print ``MAIL_ROUNDTRIP UNKNOWN - ...`` on
stdout and exit 3 (not argparse's 2).  Passwords come from files or the
environment, never from the command line.
"""

import argparse
import logging
import math
import os
import socket
import sys

import nagiosplugin

from . import __version__, imap, smtp
from .budget import Budget
from .check import NAME, build
from .settings import Endpoint, Settings
from .tls import client_context

SYSTEM_STATE_DIR = "/var/lib/check_mail_roundtrip"
ENV_STATE_DIR = "CHECK_MAIL_ROUNDTRIP_STATE_DIR"
ENV_SMTP_PASSWORD = "CHECK_MAIL_ROUNDTRIP_SMTP_PASSWORD"
ENV_IMAP_PASSWORD = "CHECK_MAIL_ROUNDTRIP_IMAP_PASSWORD"
MIN_TIMEOUT, MAX_TIMEOUT = 2.0, 3600.0


class UsageError(Exception):
    """A usage or configuration error: UNKNOWN, exit 3."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def _seconds(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("not a number of seconds: %r" % text)
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError("must be a positive number of seconds: %r" % text)
    return value


def _timeout(text):
    value = _seconds(text)
    if not MIN_TIMEOUT <= value <= MAX_TIMEOUT:
        raise argparse.ArgumentTypeError("must be between %g and %g seconds: %r" % (MIN_TIMEOUT, MAX_TIMEOUT, text))
    return value


def _range(text):
    try:
        return nagiosplugin.Range(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError("not a Nagios range: %r (%s)" % (text, exc))


def _port(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError("not a TCP port: %r" % text)
    return value


def parser():
    p = _Parser(
        prog="check_mail_roundtrip",
        description=(
            "Nagios/Icinga check that proves mail flows end to end. Each run collects "
            "the probe mails that came back since the last run (IMAP), reports their "
            "round-trip time, probes still in flight and lost probes, and sends the "
            "next probe (SMTP). Probes are signed (HMAC-SHA256); the check never "
            "touches mail that is not its own verified probe."
        ),
        epilog=(
            "Passwords: --smtp-password-file/--imap-password-file, or the environment "
            "variables %s and %s. State directory: --state-dir, else $%s, else state/ "
            "in a checkout, else %s. Exit codes: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN."
            % (ENV_SMTP_PASSWORD, ENV_IMAP_PASSWORD, ENV_STATE_DIR, SYSTEM_STATE_DIR)
        ),
    )
    a = p.add_argument
    a("-H", "--host", help="mail server for both SMTP and IMAP unless --smtp-host/--imap-host say otherwise")
    g = p.add_argument_group("sending (SMTP)")
    g.add_argument("--smtp-host", help="SMTP server (default: --host)")
    g.add_argument("--smtp-port", type=_port, help="SMTP port (default: 25 for starttls/none, 465 for tls)")
    g.add_argument("--smtp-tls", choices=("starttls", "tls", "none"), default="starttls",
                   help="STARTTLS (default), implicit TLS, or no TLS")
    g.add_argument("--smtp-user", help="SMTP AUTH user (default: no AUTH)")
    g.add_argument("--smtp-password-file", metavar="FILE",
                   help="file whose first line is the SMTP password (or set %s)" % ENV_SMTP_PASSWORD)
    g = p.add_argument_group("collecting (IMAP)")
    g.add_argument("--imap-host", help="IMAP server (default: --host)")
    g.add_argument("--imap-port", type=_port, help="IMAP port (default: 993 for tls, 143 otherwise)")
    g.add_argument("--imap-tls", choices=("tls", "starttls", "none"), default="tls",
                   help="implicit TLS (default), STARTTLS, or no TLS")
    g.add_argument("--imap-user", help="IMAP login (default: --from)")
    g.add_argument("--imap-password-file", metavar="FILE",
                   help="file whose first line is the IMAP password (or set %s)" % ENV_IMAP_PASSWORD)
    g.add_argument("--imap-folder", default="INBOX", help="folder where probes come back (default: INBOX)")
    g = p.add_argument_group("probe")
    g.add_argument("--from", dest="mail_from", metavar="ADDRESS", help="probe sender (required)")
    g.add_argument("--to", dest="rcpt_to", metavar="ADDRESS",
                   help="probe recipient (default: --from); an echo or forwarding address for an external loop")
    g.add_argument("--name", help="profile name: separates probes and state of several checks sharing "
                                  "one mailbox (default: derived from addresses, hosts and ports)")
    g = p.add_argument_group("TLS")
    g.add_argument("--ca-file", metavar="FILE", help="trust these CA certificates (PEM) instead of the system store")
    g.add_argument("--insecure", action="store_true",
                   help="do NOT verify server certificates (explicit opt-out; avoid)")
    g = p.add_argument_group("thresholds")
    g.add_argument("-w", "--warning", type=_range, default=_range("120"), metavar="RANGE",
                   help="round-trip time and age of the oldest probe in flight, seconds (default: 120)")
    g.add_argument("-c", "--critical", type=_range, default=_range("600"), metavar="RANGE",
                   help="likewise for CRITICAL (default: 600)")
    g.add_argument("--lost-after", type=_seconds, default=3600.0, metavar="SECONDS",
                   help="a probe not back after this long is lost (default: 3600; must exceed --critical)")
    g.add_argument("--lost-warning", type=_range, default=_range("0"), metavar="RANGE",
                   help="number of probes declared lost in this run (default: 0, i.e. any loss warns)")
    g.add_argument("--lost-critical", type=_range, default=None, metavar="RANGE",
                   help="likewise for CRITICAL (default: none)")
    g.add_argument("--stale-warning", type=_range, default=None, metavar="RANGE",
                   help="seconds since the last successful round trip (default: not evaluated)")
    g.add_argument("--stale-critical", type=_range, default=None, metavar="RANGE",
                   help="likewise for CRITICAL (default: not evaluated)")
    g = p.add_argument_group("behaviour")
    g.add_argument("--state-dir", metavar="DIR", help="where the state files and the signing secret live")
    g.add_argument("--secret-file", metavar="FILE",
                   help="signing secret (default: 'secret' in the state directory, created 0600 on first use)")
    g.add_argument("--keep", action="store_true", help="leave returned probes in the mailbox (folder opened read-only)")
    g.add_argument("--error-state", choices=("critical", "unknown"), default="critical",
                   help="state for a failure to talk to a mail server (default: critical)")
    g.add_argument("-t", "--timeout", type=_timeout, default=30.0, metavar="SECONDS",
                   help="whole-run budget, 2 to 3600 (default: 30); every step gets a share, "
                        "the check always ends by itself")
    g.add_argument("-v", "--verbose", action="count", default=0,
                   help="more output: -v lists what was found and ignored, -vvv adds a protocol trace (secrets redacted)")
    g.add_argument("-V", "--version", action="version", version="check_mail_roundtrip %s" % __version__)
    return p


def _password(path, env, what):
    if path:
        try:
            with open(path, encoding="utf-8") as f:
                return f.readline().rstrip("\r\n")
        except OSError as exc:
            raise UsageError("cannot read %s password file %s: %s" % (what, path, exc.strerror or exc))
    return os.environ.get(env)


def default_state_dir(checkout_state_dir):
    return os.environ.get(ENV_STATE_DIR) or checkout_state_dir or SYSTEM_STATE_DIR


def settings_from(args, checkout_state_dir=None):
    """Settings from parsed *args*; raises UsageError on a bad combination."""
    if not args.mail_from:
        raise UsageError("--from is required")
    smtp_host = args.smtp_host or args.host
    imap_host = args.imap_host or args.host
    if not smtp_host or not imap_host:
        raise UsageError("give -H/--host, or both --smtp-host and --imap-host")
    crit = args.critical
    if not crit.invert and crit.start == 0 and not math.isinf(crit.end) and args.lost_after <= crit.end:
        raise UsageError("--lost-after (%gs) must exceed the critical threshold (%gs)" % (args.lost_after, crit.end))
    if args.insecure and args.ca_file:
        raise UsageError("--insecure and --ca-file exclude each other")
    if args.ca_file and not os.path.isfile(args.ca_file):
        raise UsageError("--ca-file %s: no such file" % args.ca_file)
    try:
        ctx = client_context(args.ca_file, args.insecure)
    except Exception as exc:  # ssl.SSLError, OSError: a bad CA file
        raise UsageError("--ca-file %s: %s" % (args.ca_file, exc))
    smtp_password = _password(args.smtp_password_file, ENV_SMTP_PASSWORD, "SMTP")
    if args.smtp_user and not smtp_password:
        raise UsageError("--smtp-user needs a password: --smtp-password-file or $%s" % ENV_SMTP_PASSWORD)
    imap_password = _password(args.imap_password_file, ENV_IMAP_PASSWORD, "IMAP")
    if not imap_password:
        raise UsageError("no IMAP password: give --imap-password-file or set $%s" % ENV_IMAP_PASSWORD)
    rcpt_to = args.rcpt_to or args.mail_from
    smtp_ep = Endpoint("SMTP", smtp_host, args.smtp_port or smtp.DEFAULT_PORTS[args.smtp_tls], args.smtp_tls,
                       args.smtp_user, smtp_password, ctx)
    imap_ep = Endpoint("IMAP", imap_host, args.imap_port or imap.DEFAULT_PORTS[args.imap_tls], args.imap_tls,
                       args.imap_user or args.mail_from, imap_password, ctx)
    profile = args.name or "%s>%s smtp:%s:%d imap:%s:%d/%s" % (
        args.mail_from, rcpt_to, smtp_host, smtp_ep.port, imap_host, imap_ep.port, args.imap_folder)
    return Settings(
        profile=profile, mail_from=args.mail_from, rcpt_to=rcpt_to, smtp=smtp_ep, imap=imap_ep,
        folder=args.imap_folder, state_dir=args.state_dir or default_state_dir(checkout_state_dir),
        secret_file=args.secret_file, warning=args.warning, critical=args.critical,
        lost_after=args.lost_after, lost_warning=args.lost_warning, lost_critical=args.lost_critical,
        stale_warning=args.stale_warning, stale_critical=args.stale_critical, keep=args.keep,
        error_state=args.error_state, timeout=args.timeout, verbose=args.verbose,
        hostname=socket.gethostname() or "localhost",
    )


def _unknown(message):
    sys.stdout.write("%s UNKNOWN - %s\n" % (NAME, " ".join(str(message).split())))
    sys.stdout.flush()
    sys.exit(3)


def internal_budget(timeout):
    """Seconds the steps may use: the -t budget less a margin for the output."""
    return max(0.5, timeout - min(2.0, timeout * 0.2))


@nagiosplugin.guarded(verbose=0)
def main(argv=None, checkout_state_dir=None):
    try:
        args = parser().parse_args(argv)
        settings = settings_from(args, checkout_state_dir)
    except UsageError as exc:
        _unknown("usage error: %s (see --help)" % exc)
    if settings.verbose >= 3:
        ours = logging.getLogger("check_mail_roundtrip")
        ours.setLevel(logging.DEBUG)
        ours.addHandler(nagiosplugin.Runtime().logchan)
        logging.getLogger("imapclient").setLevel(logging.DEBUG)
        logging.getLogger("imapclient").addHandler(nagiosplugin.Runtime().logchan)
    check = build(settings, Budget(internal_budget(settings.timeout)))
    try:
        check.main(verbose=settings.verbose, timeout=math.ceil(settings.timeout))
    except nagiosplugin.Timeout as exc:  # the last safety net; steps end earlier on their own
        _unknown("check aborted after %s (-t %g): the state stays consistent" % (exc, settings.timeout))
