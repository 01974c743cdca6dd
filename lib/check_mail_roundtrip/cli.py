"""Command line: options -> Settings -> one nagiosplugin check run.

Usage and configuration errors print ``MAIL_ROUNDTRIP UNKNOWN - ...`` on
stdout and exit 3 (not argparse's 2).  Passwords come from files or the
environment, never from the command line.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import socket
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NoReturn, Optional

import nagiosplugin

from . import __version__, extraopts, private_file, sasl
from .budget import Budget
from .check import NAME, build
from .redact import Stream, redact, register
from .roundtrip import REST_OF_RUN
from .settings import Endpoint, Settings
from .tls import client_context

if TYPE_CHECKING:
    import ssl

    from .oauth2 import TokenSource

SYSTEM_STATE_DIR = "/var/lib/check_mail_roundtrip"
ENV_STATE_DIR = "CHECK_MAIL_ROUNDTRIP_STATE_DIR"
ENV_SMTP_PASSWORD = "CHECK_MAIL_ROUNDTRIP_SMTP_PASSWORD"
ENV_IMAP_PASSWORD = "CHECK_MAIL_ROUNDTRIP_IMAP_PASSWORD"
ENV_POP3_PASSWORD = "CHECK_MAIL_ROUNDTRIP_POP3_PASSWORD"
ENV_OAUTH2_SECRET = "CHECK_MAIL_ROUNDTRIP_OAUTH2_CLIENT_SECRET"
MIN_TIMEOUT, MAX_TIMEOUT = 2.0, 3600.0
PASSWORD_BYTES = 4096  # a password or client secret file larger than this is refused
DEFAULT_WARNING, DEFAULT_CRITICAL = "120", "600"


class UsageError(Exception):
    """A usage or configuration error: UNKNOWN, exit 3."""


class Unusable(UsageError):
    """A file the options name that must not be used as it is (its owner, its mode) or that
    this user may not read: UNKNOWN with the fix, not called a usage error."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("not a number of seconds: %r" % text)
    return value


def seconds(text: str) -> float:
    value = _number(text)
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError("must be a positive number of seconds: %r" % text)
    return value


def timeout_seconds(text: str) -> float:
    value = seconds(text)
    if not MIN_TIMEOUT <= value <= MAX_TIMEOUT:
        raise argparse.ArgumentTypeError("must be between %g and %g seconds: %r" % (MIN_TIMEOUT, MAX_TIMEOUT, text))
    return value


def _range(text: str) -> nagiosplugin.Range:
    try:
        return nagiosplugin.Range(text)
    except ValueError as exc:
        why = str(exc) if "greater than" in str(exc) else "expected [@][START:]END with numbers"
        raise argparse.ArgumentTypeError(
            "not a Nagios range: %r (%s; e.g. 120, 10:20, ~:10, @10:20)" % (text, why))


def _wait(text: str) -> float:
    value = _number(text)
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more seconds: %r" % text)
    return value


MAX_HISTORY_DAYS = 36500


def _days(text: str) -> int:
    """--history-days: a whole number of days, 0 (no history) to MAX_HISTORY_DAYS."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= MAX_HISTORY_DAYS:
        raise argparse.ArgumentTypeError("must be a whole number of days from 0 to %d: %r" % (MAX_HISTORY_DAYS, text))
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError("not a TCP port: %r" % text)
    return value


# The two connections, described once; their options and Endpoints are made from this
# (the transports' modules are imported only by a run that uses them).
SIDES: dict[str, dict[str, Any]] = {
    "smtp": {"protocol": "SMTP", "title": "sending (SMTP)", "ports": {"starttls": 25, "tls": 465, "none": 25},
             "tls": ("starttls", "tls", "none"), "tls_help": "STARTTLS (default), implicit TLS, or no TLS",
             "user_help": "SMTP AUTH user (default: no AUTH)", "env": ENV_SMTP_PASSWORD},
    "imap": {"protocol": "IMAP", "title": "collecting (IMAP)", "ports": {"tls": 993, "starttls": 143, "none": 143},
             "tls": ("tls", "starttls", "none"), "tls_help": "implicit TLS (default), STARTTLS, or no TLS",
             "user_help": "IMAP login (default: --from)", "env": ENV_IMAP_PASSWORD},
    "pop3": {"protocol": "POP3", "title": "collecting (POP3, with --collect pop3)",
             "ports": {"tls": 995, "starttls": 110, "none": 110},
             "tls": ("tls", "starttls", "none"), "tls_help": "implicit TLS (default), STLS, or no TLS",
             "user_help": "POP3 login (default: --from)", "env": ENV_POP3_PASSWORD},
}
COLLECTORS = ("imap", "pop3", "graph")  # what may collect (--collect)
SENDERS = ("smtp", "graph")  # what may send (--send)
GRAPH_URL = "https://graph.microsoft.com"
GRAPH_SCOPE = "https://graph.microsoft.com/.default"  # the OAuth2 scope a Graph leg asks for by default


def side_options(p: argparse.ArgumentParser, side: str, auth: bool = True) -> argparse._ArgumentGroup:
    """--X-host, --X-port, --X-tls, --X-user, (--X-auth, else the password,) --X-password-file for one side."""
    d = SIDES[side]
    by_port: dict[int, list[str]] = {}
    for mode in d["tls"]:
        by_port.setdefault(d["ports"][mode], []).append(mode)
    ports = ", ".join("%d for %s" % (port, "/".join(modes)) for port, modes in by_port.items())
    g = p.add_argument_group(d["title"])
    g.add_argument("--%s-host" % side, help="%s server (default: --host)" % d["protocol"])
    g.add_argument("--%s-port" % side, type=_port, help="%s port (default: %s)" % (d["protocol"], ports))
    g.add_argument("--%s-tls" % side, choices=d["tls"], default=d["tls"][0], help=d["tls_help"])
    g.add_argument("--%s-user" % side, help=d["user_help"])
    if side == "smtp":
        g.add_argument("--smtp-helo", metavar="NAME",
                       help="name to greet the SMTP server with in EHLO/HELO (default: this host's FQDN; "
                            "an MX may check it)")
    if auth:
        g.add_argument("--%s-auth" % side, choices=("password", "oauth2"), default="password",
                       help="log in with the password (default) or an OAuth2 access token (see OAuth2)")
    else:
        p.set_defaults(**{"%s_auth" % side: "password"})  # no --X-auth: the password it is
    g.add_argument("--%s-password-file" % side, metavar="FILE",
                   help="file whose first line is the %s password (or set %s)" % (d["protocol"], d["env"]))
    return g


def _oauth2_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("OAuth2 (with --imap-auth, --pop3-auth or --smtp-auth oauth2; one token source)")
    g.add_argument("--oauth2-mechanism", choices=sasl.MECHANISMS, default="auto",
                   help="SASL mechanism (default auto: OAUTHBEARER where the server offers it, else XOAUTH2)")
    g.add_argument("--oauth2-token-file", metavar="FILE",
                   help="token source: a file whose first line is an access token kept fresh by something else")
    g.add_argument("--oauth2-token-command", metavar="COMMAND",
                   help="token source: a command (split like a shell would, run without one) whose "
                        "output's first line is the access token; bounded by -t")
    g.add_argument("--oauth2-token-url", metavar="URL",
                   help="token source: the provider's token endpoint (https), for the client_credentials "
                        "grant or, with --oauth2-refresh-token-file, the refresh_token grant; the access "
                        "token is cached in the state directory until shortly before it expires")
    g.add_argument("--oauth2-client-id", metavar="ID", help="client (application) id at the token endpoint")
    g.add_argument("--oauth2-client-secret-file", metavar="FILE",
                   help="file whose first line is the client secret (or set %s)" % ENV_OAUTH2_SECRET)
    g.add_argument("--oauth2-scope", metavar="SCOPE",
                   help="scope to ask for, e.g. https://outlook.office365.com/.default (default: none; with "
                        "a Graph leg %s)" % GRAPH_SCOPE)
    g.add_argument("--oauth2-refresh-token-file", metavar="FILE",
                   help="file whose first line is a refresh token (refresh_token grant); a rotated one "
                        "is written back, keeping the file's mode and owner")


def _token_source(args: argparse.Namespace, ctx: ssl.SSLContext, secrets: Mapping[str, str],
                  state_dir: str) -> Optional[TokenSource]:
    """The OAuth2 TokenSource the options describe, or None when no side uses OAuth2."""
    given = [o for o in ("token_file", "token_command", "token_url", "client_id", "client_secret_file",
                         "scope", "refresh_token_file") if getattr(args, "oauth2_" + o)]
    graph = "graph" in (args.collect, args.send)
    logins = [side for side in (args.collect, args.send) if side in SIDES and getattr(args, side + "_auth") == "oauth2"]
    if not graph and not logins:
        if given:
            raise UsageError("--oauth2-%s needs --%s-auth oauth2 or --smtp-auth oauth2"
                             % (given[0].replace("_", "-"), args.collect))
        return None
    if graph and logins:
        raise UsageError("Graph and the OAuth2 login to %s need tokens for different services, and the check has "
                         "one token source: let Graph do both legs, or log in to %s with a password"
                         % (SIDES[logins[0]]["protocol"], SIDES[logins[0]]["protocol"]))
    from . import oauth2  # only a run that signs in with OAuth2 loads it (and its HTTP client)
    sources = [o for o in ("token_file", "token_command", "token_url") if o in given]
    if len(sources) != 1:
        raise UsageError("OAuth2 needs exactly one token source: --oauth2-token-file, "
                         "--oauth2-token-command or --oauth2-token-url")
    for o in ("client_id", "client_secret_file", "scope", "refresh_token_file"):
        if o in given and sources != ["token_url"]:
            raise UsageError("--oauth2-%s goes with --oauth2-token-url" % o.replace("_", "-"))
    if args.oauth2_token_file:
        return oauth2.FileToken(args.oauth2_token_file)
    if args.oauth2_token_command:
        import shlex
        try:
            argv = shlex.split(args.oauth2_token_command)
        except ValueError as exc:
            raise UsageError("--oauth2-token-command: %s" % exc)
        if not argv:
            raise UsageError("--oauth2-token-command is empty")
        return oauth2.CommandToken(argv)
    url = args.oauth2_token_url
    if not url.lower().startswith("https://"):
        raise UsageError("--oauth2-token-url must be an https:// URL: %s" % url)
    if not args.oauth2_client_id:
        raise UsageError("--oauth2-token-url needs --oauth2-client-id")
    client_secret = _password(args.oauth2_client_secret_file, secrets.get("oauth2-client-secret"),
                              ENV_OAUTH2_SECRET, "OAuth2 client secret file")
    register(client_secret)
    if not client_secret and not args.oauth2_refresh_token_file:
        raise UsageError("the client_credentials grant needs the client secret: "
                         "--oauth2-client-secret-file or $%s" % ENV_OAUTH2_SECRET)
    return oauth2.GrantToken(url, args.oauth2_client_id, client_secret,
                             args.oauth2_scope or (GRAPH_SCOPE if graph else None),
                             args.oauth2_refresh_token_file, state_dir, ctx)


def endpoint(args: argparse.Namespace, side: str, ctx: ssl.SSLContext, secrets: Mapping[str, str],
             tokens: Optional[TokenSource], default_user: Optional[str] = None) -> Endpoint:
    """The Endpoint of one side from the parsed options."""
    d = SIDES[side]

    def opt(name: str) -> Any:
        return getattr(args, "%s_%s" % (side, name))

    host = _host(opt("host") or args.host)
    if not host:
        raise UsageError("give -H/--host or --%s-host" % side)
    if opt("auth") == "oauth2":
        return Endpoint(d["protocol"], host, opt("port") or d["ports"][opt("tls")], opt("tls"),
                        opt("user") or args.mail_from, None, ctx, "oauth2", tokens, args.oauth2_mechanism,
                        family=args.family)
    password = _password(opt("password_file"), secrets.get("%s-password" % side), d["env"],
                         "%s password file" % d["protocol"])
    register(password, user=opt("user") or default_user)
    return Endpoint(d["protocol"], host, opt("port") or d["ports"][opt("tls")], opt("tls"),
                    opt("user") or default_user, password, ctx, family=args.family)


def graph_endpoint(args: argparse.Namespace, ctx: ssl.SSLContext, tokens: Optional[TokenSource]) -> Endpoint:
    """The Graph Endpoint from --graph-url (https, a host, a port; nothing else) and --graph-user."""
    import urllib.parse  # only a run with a Graph leg reads a URL

    url = args.graph_url
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() != "https":
        raise UsageError("--graph-url must be an https:// URL: %s" % url)
    try:
        port = parts.port or 443
    except ValueError:
        raise UsageError("--graph-url %s: not a TCP port" % url)
    if not parts.hostname or parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise UsageError("--graph-url takes the service's address only (https://HOST or https://HOST:PORT, e.g. "
                         "%s): %s" % (GRAPH_URL, url))
    assert tokens is not None  # a Graph leg always has its token source (see _token_source)
    return Endpoint("Graph", parts.hostname, port, "tls", args.graph_user or args.mail_from, None, ctx, "oauth2",
                    tokens, family=args.family)


def _graph_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("Microsoft Graph (with --collect graph or --send graph)")
    g.add_argument("--graph-user", metavar="ADDRESS",
                   help="the mailbox the Graph requests act on: its user principal name or id (default: --from)")
    g.add_argument("--graph-url", metavar="URL", default=GRAPH_URL,
                   help="the Graph service (default: %s; a national cloud has its own); its certificate is "
                        "verified like a mail server's (--ca-file)" % GRAPH_URL)
    g.add_argument("--graph-folder", metavar="FOLDER", default="inbox",
                   help="folder where probes come back: a well-known name such as inbox or a folder id "
                        "(default: inbox)")


def _host(text: Optional[str]) -> Optional[str]:
    """The host as given; "[::1]" is the IPv6 address ::1."""
    if text and text.startswith("[") and text.endswith("]"):
        return text[1:-1]
    return text


def parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="check_mail_roundtrip",
        description=(
            "Nagios/Icinga check that proves mail flows end to end. Each run collects "
            "the probe mails that came back since the last run (IMAP or POP3), reports their "
            "round-trip time, probes still in flight and lost probes, and sends the "
            "next probe (SMTP). Probes are signed (HMAC-SHA256); the check never "
            "touches mail that is not its own verified probe."
        ),
        epilog=(
            "Passwords: --smtp-password-file/--imap-password-file/--pop3-password-file, or the "
            "environment variables %s, %s and %s (the OAuth2 client secret: "
            "--oauth2-client-secret-file or %s). State directory: --state-dir, else $%s, else state/ "
            "in a checkout, else %s. Exit codes: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN."
            % (ENV_SMTP_PASSWORD, ENV_IMAP_PASSWORD, ENV_POP3_PASSWORD, ENV_OAUTH2_SECRET, ENV_STATE_DIR,
               SYSTEM_STATE_DIR)
        ),
    )
    a = p.add_argument
    a("-H", "--host", help="mail server for both SMTP and IMAP (or POP3) unless --smtp-host/--imap-host "
                           "(--pop3-host) say otherwise (a name, an IPv4 address, or an IPv6 address, "
                           "also as [::1]); not needed when Graph does both legs")
    a("--collect", choices=COLLECTORS, default="imap",
      help="collect the probes by IMAP (default), POP3 (the --pop3-* options; the POP3 side's INBOX) or "
           "Microsoft Graph (the --graph-* options, an OAuth2 token); only that side's options are used, and "
           "only its password is needed")
    a("--send", choices=SENDERS, default="smtp",
      help="send the probes by SMTP (default) or by Microsoft Graph (sendMail as the --graph-user mailbox, "
           "no copy in Sent Items; the --smtp-* options are then not used)")
    family = p.add_mutually_exclusive_group()
    family.add_argument("-4", "--ipv4", dest="family", action="store_const", const="ipv4",
                        help="connect over IPv4 only (default: whatever the name resolves to, in the "
                             "resolver's order, trying the next address when one refuses)")
    family.add_argument("-6", "--ipv6", dest="family", action="store_const", const="ipv6",
                        help="connect over IPv6 only")
    groups = {side: side_options(p, side) for side in SIDES}
    groups["imap"].add_argument("--imap-folder", default="INBOX",
                                help="folder where probes come back (default: INBOX)")
    junk = groups["imap"].add_mutually_exclusive_group()
    junk.add_argument("--junk-folder", metavar="NAME",
                      help="also look for returned probes in this folder, where a filter files spam "
                           "(default: the folder flagged \\Junk, else Junk, Spam, Junk E-mail, Junk Email, "
                           "[Gmail]/Spam or the same under INBOX; none found is no error; with --collect graph: "
                           "a well-known name or a folder id, default junkemail)")
    junk.add_argument("--no-junk", action="store_true",
                      help="do not look into a Junk folder (a probe filed as spam then looks lost)")
    groups["imap"].add_argument("--junk-state", choices=("ok", "warning", "critical"), default="warning",
                                help="state when a probe was found in the Junk folder (default: warning); "
                                     "it still counts as a round trip")
    _oauth2_options(p)
    _graph_options(p)
    g = p.add_argument_group("probe")
    g.add_argument("--from", dest="mail_from", metavar="ADDRESS", help="probe sender (required)")
    g.add_argument("--to", dest="rcpt_to", metavar="ADDRESS",
                   help="probe recipient (default: --from); an echo or forwarding address for an external loop")
    g.add_argument("--name", help="profile name: separates probes and state of several checks sharing "
                                  "one mailbox (default: derived from addresses, hosts, ports and folder, "
                                  "never from a password)")
    g.add_argument("--node", metavar="NAME",
                   help="this monitoring node's name, when several nodes (an HA zone) run the same check "
                        "on one mailbox: each counts only the probes it sent and leaves the others' for "
                        "them (default: this host's name)")
    g = p.add_argument_group("TLS")
    g.add_argument("--ca-file", metavar="FILE", help="trust these CA certificates (PEM) instead of the system store")
    g.add_argument("--insecure", action="store_true",
                   help="do NOT verify server certificates (explicit opt-out; avoid; excludes --ca-file)")
    g = p.add_argument_group("thresholds")
    g.add_argument("-w", "--warning", type=_range, metavar="RANGE",
                   help="round-trip time and age of the oldest probe in flight, seconds (default: "
                        "%s, or -c when that is lower; -w above -c is a usage error)" % DEFAULT_WARNING)
    g.add_argument("-c", "--critical", type=_range, metavar="RANGE",
                   help="likewise for CRITICAL (default: %s, or -w when that is higher)" % DEFAULT_CRITICAL)
    g.add_argument("--lost-after", type=seconds, default=3600.0, metavar="SECONDS",
                   help="a probe not back after this long is lost (default: 3600; must exceed --critical)")
    g.add_argument("--lost-warning", type=_range, default=_range("0"), metavar="RANGE",
                   help="number of probes declared lost in this run (default: 0, i.e. any loss warns)")
    g.add_argument("--lost-critical", type=_range, default=None, metavar="RANGE",
                   help="likewise for CRITICAL (default: none)")
    g.add_argument("--stale-warning", type=_range, default=None, metavar="RANGE",
                   help="seconds since the last successful round trip (default: not evaluated)")
    g.add_argument("--stale-critical", type=_range, default=None, metavar="RANGE",
                   help="likewise for CRITICAL (default: not evaluated)")
    g.add_argument("--leg-warning", type=_range, default=None, metavar="RANGE",
                   help="seconds of either leg of a round trip through mail_roundtrip_reflector (out to "
                        "it, back from it; from its signed stamp) (default: not evaluated)")
    g.add_argument("--leg-critical", type=_range, default=None, metavar="RANGE",
                   help="likewise for CRITICAL (default: not evaluated)")
    g = p.add_argument_group("hops and authentication results")
    g.add_argument("--auth-results-state", choices=("ok", "warning", "critical"), default="ok",
                   help="state when the spf, dkim or dmarc verdict of a probe back is fail, softfail or none "
                        "(default: ok, the verdicts only shown with -v); with warning or critical the "
                        "Authentication-Results of every probe back are read")
    g.add_argument("--auth-results-host", metavar="NAME",
                   help="the host whose Authentication-Results count, as it names itself in them "
                        "(default: the server that wrote the probe's topmost Received field, the one that "
                        "delivered it into the mailbox); those below the Received field of a host before "
                        "it are ignored as forged")
    g = p.add_argument_group("behaviour")
    g.add_argument("--state-dir", metavar="DIR",
                   help="where the state files and the signing secret live (default: $%s, else state/ beside "
                        "the command in a checkout, else %s)" % (ENV_STATE_DIR, SYSTEM_STATE_DIR))
    g.add_argument("--secret-file", metavar="FILE",
                   help="signing secret (default: 'secret' in the state directory, created 0600 on first use); "
                        "refused when its group or others may read it")
    g.add_argument("--history-days", type=_days, default=400, metavar="DAYS",
                   help="keep every probe's fate for this many days in a history file beside the state "
                        "file (named like it, .history.csv for .json), read by mail_roundtrip_report; older "
                        "lines are dropped once a day (default: 400; 0 writes no history)")
    g.add_argument("--extra-opts", metavar="[SECTION][@FILE]", nargs="?", const="",
                   help="read options from an ini file as the monitoring-plugins do: section SECTION "
                        "(default: check_mail_roundtrip) of FILE (default: $MP_CONFIG_FILE, else "
                        "plugins.ini and friends in $NAGIOS_CONFIG_PATH, else e.g. "
                        "/etc/monitoring-plugins/monitoring-plugins.ini); lines 'warning = 120'; "
                        "options given on the command line win; may hold smtp-password, "
                        "imap-password, pop3-password and oauth2-client-secret if only its owner can read it")
    g.add_argument("--keep", action="store_true", help="leave returned probes in the mailbox (folder opened read-only)")
    g.add_argument("--dedicated-mailbox", action="store_true",
                   help="the IMAP folder holds only this check's mail: on a server without UIDPLUS, "
                        "removed probes may be expunged with a plain EXPUNGE (which removes every "
                        "mail flagged \\Deleted there); without this they stay flagged \\Deleted")
    g.add_argument("--wait", type=_wait, default=0.0, metavar="SECONDS",
                   help="after sending, wait up to SECONDS for that probe and report its round trip in "
                        "this run (default: 0, it is collected by the next run); IMAP IDLE where offered, "
                        "else a NOOP and a search every second (POP3: a new session every 2 s); "
                        "-t must exceed it by %g s" % REST_OF_RUN)
    g.add_argument("--no-idle", action="store_true",
                   help="with --wait, poll with NOOP and a search instead of IMAP IDLE")
    g.add_argument("--error-state", choices=("critical", "unknown"), default="critical",
                   help="state for a failure to talk to a mail server (default: critical)")
    g.add_argument("-t", "--timeout", type=timeout_seconds, default=30.0, metavar="SECONDS",
                   help="whole-run budget, 2 to 3600 (default: 30); every step gets a share, "
                        "the check always ends by itself")
    g.add_argument("-v", "--verbose", action="count", default=0,
                   help="more output: -v lists what was found and ignored and the hops of the slowest probe back, "
                        "-vvv adds a protocol trace (secrets redacted)")
    g.add_argument("-V", "--version", action="version", version="check_mail_roundtrip %s" % __version__)
    return p


def _password(path: Optional[str], from_ini: Optional[str], env: str, name: str) -> Optional[str]:
    """The password: from --X-password-file (*name* names it: "IMAP password file"), else the
    extra-opts file, else the environment.

    The file is read as :mod:`private_file` reads secrets: a regular file of at
    most PASSWORD_BYTES that belongs to this user (or root) and that neither
    its group nor others may read (Unusable otherwise, or when this user may
    not read it: UNKNOWN with the fix).
    """
    if path:
        try:
            line = private_file.first_line(private_file.read(path, name, PASSWORD_BYTES))
        except private_file.Refused as exc:
            raise Unusable(str(exc))
        except OSError as exc:
            raise UsageError("cannot read %s %s: %s" % (name, path, exc.strerror or exc))
        try:
            return line.decode("utf-8")
        except UnicodeDecodeError:
            raise UsageError("%s %s is not UTF-8 text" % (name, path))
    if from_ini:
        return from_ini
    return os.environ.get(env)


def _thresholds(warning: Optional[nagiosplugin.Range],
                critical: Optional[nagiosplugin.Range]) -> tuple[nagiosplugin.Range, nagiosplugin.Range]:
    """-w/-c with their defaults; a default gives way to an explicit value on the other side."""
    if warning is None and critical is None:
        return _range(DEFAULT_WARNING), _range(DEFAULT_CRITICAL)
    if warning is None and critical is not None:
        default = _range(DEFAULT_WARNING)
        return (critical if _simple(critical) and critical.end < default.end else default), critical
    if critical is None and warning is not None:
        default = _range(DEFAULT_CRITICAL)
        return warning, (warning if _simple(warning) and warning.end > default.end else default)
    return warning, critical


def _simple(rng: nagiosplugin.Range) -> bool:
    """A plain 0:N range."""
    return not rng.invert and rng.start == 0 and not math.isinf(rng.end)


def _ordered(low: Optional[nagiosplugin.Range], high: Optional[nagiosplugin.Range], low_name: str, high_name: str,
             unit: str = "s") -> None:
    """A warning range that is not inside the critical one is a usage error."""
    if low is None or high is None:
        return
    if _simple(low) and _simple(high) and low.end > high.end:
        raise UsageError("%s (%g%s) is above %s (%g%s): the warning threshold must not exceed the critical one"
                         % (low_name, low.end, unit, high_name, high.end, unit))


def default_state_dir(checkout_state_dir: Optional[str]) -> str:
    return os.environ.get(ENV_STATE_DIR) or checkout_state_dir or SYSTEM_STATE_DIR


def settings_from(args: argparse.Namespace, checkout_state_dir: Optional[str] = None,
                  secrets: Optional[Mapping[str, str]] = None) -> Settings:
    """Settings from parsed *args*; raises UsageError on a bad combination.

    *secrets* holds passwords read from an --extra-opts file.
    """
    secrets = secrets or {}
    if not args.mail_from:
        raise UsageError("--from is required")
    args.warning, args.critical = _thresholds(args.warning, args.critical)
    _ordered(args.warning, args.critical, "-w/--warning", "-c/--critical")
    _ordered(args.lost_warning, args.lost_critical, "--lost-warning", "--lost-critical", unit="")
    _ordered(args.stale_warning, args.stale_critical, "--stale-warning", "--stale-critical")
    _ordered(args.leg_warning, args.leg_critical, "--leg-warning", "--leg-critical")
    crit = args.critical
    if not crit.invert and crit.start == 0 and not math.isinf(crit.end) and args.lost_after <= crit.end:
        raise UsageError("--lost-after (%gs) must exceed the critical threshold (%gs)" % (args.lost_after, crit.end))
    if args.wait and args.wait + REST_OF_RUN > args.timeout:
        raise UsageError("--wait %gs leaves no room in -t %gs for the rest of the run: -t must be at least "
                         "--wait + %gs (here %gs)" % (args.wait, args.timeout, REST_OF_RUN, args.wait + REST_OF_RUN))
    if args.collect == "pop3" and args.junk_folder:
        raise UsageError("--junk-folder needs IMAP: POP3 sees only the INBOX")
    if args.insecure and args.ca_file:
        raise UsageError("--insecure and --ca-file exclude each other")
    if args.ca_file and not os.path.isfile(args.ca_file):
        raise UsageError("--ca-file %s: no such file" % args.ca_file)
    try:
        ctx = client_context(args.ca_file, args.insecure)
    except Exception as exc:  # ssl.SSLError, OSError: a bad CA file
        raise UsageError("--ca-file %s: %s" % (args.ca_file, _ca_problem(exc)))
    state_dir = args.state_dir or default_state_dir(checkout_state_dir)
    tokens = _token_source(args, ctx, secrets, state_dir)
    graph = graph_endpoint(args, ctx, tokens) if "graph" in (args.collect, args.send) else None
    smtp_ep = None
    if args.send == "smtp":
        smtp_ep = endpoint(args, "smtp", ctx, secrets, tokens)
        if smtp_ep.user and not smtp_ep.password and smtp_ep.auth == "password":
            raise UsageError("--smtp-user needs a password: --smtp-password-file or $%s" % ENV_SMTP_PASSWORD)
        sent_by = "smtp:%s:%d" % (smtp_ep.host, smtp_ep.port)
    side = args.collect  # only the side that collects is used (and needs a password)
    if side == "graph":
        assert graph is not None  # made above for a Graph leg
        collect, folder = graph, args.graph_folder
    else:
        collect, folder = endpoint(args, side, ctx, secrets, tokens, default_user=args.mail_from), args.imap_folder
    if not collect.password and collect.auth == "password":
        raise UsageError("no %s password: give --%s-password-file or set $%s"
                         % (collect.protocol, side, SIDES[side]["env"]))
    if graph is not None:
        graph_at = "graph:%s:%d/%s" % (graph.host, graph.port, graph.user)
        sent_by = graph_at if smtp_ep is None else sent_by
    rcpt_to = args.rcpt_to or args.mail_from
    where = (graph_at if side == "graph" else "%s:%s:%d" % (side, collect.host, collect.port)) + \
        ("/" + folder if side != "pop3" else "")
    profile = args.name or "%s>%s %s %s" % (args.mail_from, rcpt_to, sent_by, where)
    return Settings(
        profile=profile, mail_from=args.mail_from, rcpt_to=rcpt_to, smtp=smtp_ep,
        imap=collect if side == "imap" else None, pop3=collect if side == "pop3" else None, collect_by=side,
        graph=graph, send_by=args.send, folder=folder, state_dir=state_dir,
        secret_file=args.secret_file, warning=args.warning, critical=args.critical,
        lost_after=args.lost_after, lost_warning=args.lost_warning, lost_critical=args.lost_critical,
        stale_warning=args.stale_warning, stale_critical=args.stale_critical, keep=args.keep,
        leg_warning=args.leg_warning, leg_critical=args.leg_critical, dedicated=args.dedicated_mailbox,
        error_state=args.error_state, timeout=args.timeout, verbose=args.verbose,
        hostname=socket.gethostname() or "localhost", helo=args.smtp_helo,
        junk=None if args.no_junk else args.junk_folder or True, junk_state=args.junk_state,
        wait=args.wait, idle=not args.no_idle, node=args.node or socket.gethostname() or "localhost",
        history_days=args.history_days, auth_results_state=args.auth_results_state,
        auth_results_host=args.auth_results_host,
    )


def _ca_problem(exc: BaseException) -> str:
    """Why a CA file cannot be used, in words (no OpenSSL library codes)."""
    reason = getattr(exc, "reason", None) or ""
    if reason == "NO_CERTIFICATE_OR_CRL_FOUND":
        return "no certificate in it (expected PEM: -----BEGIN CERTIFICATE-----)"
    if isinstance(exc, OSError) and exc.strerror and not reason:
        return exc.strerror
    text = re.sub(r"^\[[^]]*\]\s*", "", str(getattr(exc, "strerror", None) or exc))
    return re.sub(r"\s*\(_ssl\.c:\d+\)", "", text) or type(exc).__name__


def _unknown(message: object) -> NoReturn:
    sys.stdout.write("%s UNKNOWN - %s\n" % (NAME, " ".join(redact(str(message)).split())))
    sys.stdout.flush()
    sys.exit(3)


def _flags(p: argparse.ArgumentParser) -> set[str]:
    """Option names (without dashes) that take no value, for --extra-opts."""
    return {o.lstrip("-") for a in p._actions if a.nargs == 0 for o in a.option_strings}


def internal_budget(timeout: float) -> float:
    """Seconds the steps may use: the -t budget less a margin for the output."""
    return max(0.5, timeout - min(2.0, timeout * 0.2))


@nagiosplugin.guarded(verbose=0)
def main(argv: Optional[list[str]] = None, checkout_state_dir: Optional[str] = None) -> None:
    nagiosplugin.Runtime().stdout = Stream()  # whatever nagiosplugin prints, a failure's UNKNOWN line too
    p = parser()
    try:
        argv, secrets = extraopts.expand(list(sys.argv[1:] if argv is None else argv),
                                         _flags(p), os.environ)
        args = p.parse_args(argv)
        settings = settings_from(args, checkout_state_dir, secrets)
    except extraopts.ExtraOptsError as exc:
        _unknown("usage error: --extra-opts: %s" % exc)
    except Unusable as exc:
        _unknown(exc)
    except UsageError as exc:
        _unknown("usage error: %s (see --help)" % exc)
    if settings.verbose >= 3:
        from . import trace  # the protocol trace: -vvv only
        trace.enable(nagiosplugin.Runtime().logchan)
    check = build(settings, Budget(internal_budget(settings.timeout)))
    try:
        check.main(verbose=settings.verbose, timeout=math.ceil(settings.timeout))
    except nagiosplugin.Timeout as exc:  # the last safety net; steps end earlier on their own
        _unknown("check aborted after %s (-t %g): the state stays consistent" % (exc, settings.timeout))
