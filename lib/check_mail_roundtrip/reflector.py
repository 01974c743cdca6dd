"""mail_roundtrip_reflector: the far end of the loop sends verified probes back.

    mail_roundtrip_reflector pipe [--sender S] [--recipient R] --secret-file F ...
    mail_roundtrip_reflector poll -H HOST --imap-user U --secret-file F [--loop] ...

``pipe`` reads one message on stdin, as a ``.forward`` line, an aliases
entry, a Postfix ``pipe(8)`` transport or a Sieve ``pipe`` delivers it;
``poll`` reads a mailbox over IMAP (one pass, for cron or a systemd timer,
or ``--loop`` with IDLE).  Either way each mail goes through
:func:`reflector_rules.decide`: only a probe signed with the shared secret, for a
signed return address that is its From, not reflected before, not a bounce
or an automatic mail, and within the rate limit is sent back, by SMTP (the
check's ``--smtp-*`` options) or the local MTA (``--sendmail``), stamped with
when it came and went.  Anything else is dropped without a reply.

Exit codes, pipe: 0 reflected or deliberately dropped (also when the way
back refused the reflection for good, or an unexpected error stopped it:
never a bounce to the probe's sender, never a traceback), 75 (EX_TEMPFAIL)
when sending back failed for now, or the reflector could not work at all,
so the MTA keeps the mail and retries.
Poll: 0 done, 1 a failure (the server, sending back), 64 usage.  The state
(probes reflected, recent reflections per address, what poll examined) is a
locked JSON file written atomically in ``--state-dir``.  Every decision is
one line on stderr and in syslog (facility mail).
"""

from __future__ import annotations

import argparse
import email.message
import email.policy
import json
import os
import socket
import subprocess
import sys
import syslog
import time
from typing import TYPE_CHECKING, Any, BinaryIO, Callable, NoReturn, Optional, cast

from . import __version__, cli, smtp
from .budget import Budget, Deadline
from .collect import open_collector
from .failure import StepFailure
from .probe import VERSION
from .redact import redact
from .reflection import address
from .reflector_rules import REFLECTOR_HEADERS, Memory, build_reflection, decide, printable, token_text
from .reflector_settings import ReflectorSettings
from .secret import read as read_secret
from .state import Damaged, StateError, ensure_directory, lock, read_json, set_aside, write_atomically

if TYPE_CHECKING:
    from .imap import ImapCollector

PROG = "mail_roundtrip_reflector"
EX_OK, EX_FAIL, EX_USAGE, EX_TEMPFAIL = 0, 1, 64, 75
DEFAULT_STATE_DIR = "/var/lib/mail_roundtrip_reflector"
MAX_MESSAGE = 10 * 1024 * 1024   # bytes of a piped message read at most (the header is what counts)
LOCK_SECONDS = 20.0
MAX_PASSES = 100000              # poll passes or sessions of one --loop at most (its time comes first)
RETRY_PAUSE = 10.0               # seconds before a new session when one failed in --loop
_WIRE = email.policy.SMTP.clone(max_line_length=998)


class Failure(Exception):
    """The reflector cannot work at all (state, secret, options); the words say why."""


class Temporary(Exception):
    """Sending back failed for now: try again later."""


# -- the state -------------------------------------------------------------------

class Store:
    """reflector.json in the state directory: Memory, and poll's memory per mailbox."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.path = os.path.join(directory, "reflector.json")
        self.lock_path = os.path.join(directory, "reflector.lock")
        self.fd: Optional[int] = None
        self.memory = Memory()
        self.mailboxes: dict[str, Any] = {}
        self.notes: list[str] = []

    def __enter__(self) -> Store:
        try:
            ensure_directory(self.directory)
            self.fd = lock(self.lock_path, self.directory, LOCK_SECONDS, "another reflector")
            self._load()
        except StateError as exc:
            self.__exit__()
            raise Failure(str(exc))
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def _load(self) -> None:
        """Read reflector.json as the check reads its state file (state.read_json);
        a damaged one is set aside, with a note saying so."""
        try:
            loaded = read_json(self.path, _memories)
        except Damaged as exc:
            self.notes.append(set_aside(self.path, str(exc)))
            return
        if loaded is not None:
            self.memory, self.mailboxes = loaded

    def save(self) -> None:
        data = dict(self.memory.to_json(), mailboxes=self.mailboxes)
        try:
            write_atomically(self.path, json.dumps(data, sort_keys=True).encode("utf-8"))
        except OSError as exc:
            raise Failure("cannot write %s: %s" % (self.path, exc.strerror or exc))


def _memories(data: Any) -> tuple[Memory, dict[str, Any]]:
    """(Memory, poll's memory per mailbox) from the JSON of reflector.json; ValueError when damaged."""
    memory = Memory.from_json(data)
    mailboxes = data.get("mailboxes", {})
    return memory, (mailboxes if isinstance(mailboxes, dict) else {})


# -- sending back -------------------------------------------------------------------

def send_back(message: email.message.EmailMessage, envelope_from: str, to: str, settings: ReflectorSettings,
              deadline: Deadline) -> Optional[str]:
    """Send *message* (an EmailMessage) to *to*; Temporary when it may work later.

    Returns None when sent, or the words of a permanent refusal.
    """
    text = message.as_string(policy=_WIRE)
    if settings.sendmail:
        try:
            p = subprocess.run([settings.sendmail, "-i", "-f", envelope_from, "--", to], input=text.encode("utf-8"),
                               capture_output=True, timeout=max(1.0, deadline.left()))
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise Temporary("%s: %s" % (settings.sendmail, exc))
        if p.returncode == 0:
            return None
        words = "%s exited %d: %s" % (settings.sendmail, p.returncode,
                                     (p.stderr or p.stdout).decode("utf-8", "replace").strip()[:300])
        if p.returncode == EX_TEMPFAIL:
            raise Temporary(words)
        return words
    assert settings.smtp is not None  # without --sendmail, the way back is SMTP (see settings_from)
    result = smtp.send(text, envelope_from, to, settings.smtp, deadline,
                       local_hostname=settings.helo or socket.getfqdn())
    if result.status == smtp.SENT:
        return None
    if (result.status == smtp.FAILED and result.failure is not None
            and result.failure.detail.startswith("permanent rejection")):
        return str(result.failure)
    raise Temporary(str(result.failure))  # refused for now, no connection, or an unknown outcome


def reflect_one(header_block: bytes, envelope_sender: Optional[str], envelope_recipient: Optional[str],
                received: float, store: Store, secret: bytes, settings: ReflectorSettings, deadline: Deadline,
                clock: Callable[[], float] = time.time) -> tuple[str, str]:
    """Decide about one incoming mail and act on it; (outcome, words).

    outcome: "reflected", "dropped", "again" (a verified probe reflected before)
    or "refused" (the way back refused it for good).  Raises Temporary.

    The probe is recorded (and saved) before its reflection is built: should
    anything fail on the way, a resend is a replay and dropped.  Only when
    sending back fails for now or is refused is the record undone, so a
    retry can send it.
    """
    now = clock()
    store.memory.prune(now, settings.max_age)
    d = decide(header_block, envelope_sender, secret, store.memory, now, settings.max_age, settings.max_per_minute)
    pid = d.token.probe_id if d.token else None
    if d.to is None:
        return ("again" if d.again else "dropped"), "%s: %s" % ("probe %s" % pid if pid else "mail", d.why)
    assert d.token is not None and pid is not None  # a mail to reflect is a verified probe
    store.memory.record(pid, d.to, now)
    store.save()
    me = printable(settings.mail_from or envelope_recipient or "mail-roundtrip-reflector@%s" % socket.getfqdn())
    received_ms = int(round(received * 1000))
    sent_ms = max(received_ms, int(round(clock() * 1000)))
    message = build_reflection(d, received_ms, sent_ms, secret, me, socket.gethostname() or "localhost")
    try:
        refused = send_back(message, me, d.to, settings, deadline)
    except Temporary:
        _unrecord(store, pid, d.to, now)
        raise
    if refused:
        _unrecord(store, pid, d.to, now)
        return "refused", "probe %s: sending it back to %s was refused: %s" % (pid, d.to, refused)
    return "reflected", "probe %s reflected to %s (%s)" % (pid, d.to, token_text(d.token)[:40] + "...")


def _unrecord(store: Store, probe_id: str, to: str, now: float) -> None:
    """The reflection was not sent: forget it, so that the retry may send it."""
    store.memory.forget(probe_id, to, now)
    store.save()


def say(line: str) -> None:
    """One line on stderr and in syslog (facility mail); nothing of it can break the line,
    no secret of the run shows."""
    line = printable(redact(line))
    sys.stderr.write("%s: %s\n" % (PROG, line))
    sys.stderr.flush()
    try:
        syslog.openlog(PROG, syslog.LOG_PID, syslog.LOG_MAIL)
        syslog.syslog(syslog.LOG_INFO, line)
    except (OSError, ValueError):
        pass


# -- pipe ----------------------------------------------------------------------------

def run_pipe(settings: ReflectorSettings, secret: bytes, stdin: Optional[BinaryIO] = None,
             clock: Callable[[], float] = time.time) -> int:
    """One message on stdin: an exit code for the MTA."""
    received = clock()
    data = (stdin or sys.stdin.buffer).read(MAX_MESSAGE)
    header_block = data.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    sender = settings.sender if settings.sender is not None else os.environ.get("SENDER")
    recipient = settings.recipient or os.environ.get("ORIGINAL_RECIPIENT") or os.environ.get("RECIPIENT")
    deadline = Budget(settings.timeout).share(1.0)
    try:
        with Store(settings.state_dir) as store:
            for note in store.notes:
                say(note)
            outcome, words = reflect_one(header_block, sender, address(recipient) if recipient else None,
                                         received, store, secret, settings, deadline, clock)
    except Temporary as exc:
        say("sending back failed for now, the MTA will retry: %s" % exc)
        return EX_TEMPFAIL
    except Failure as exc:
        say("cannot work, the MTA will retry: %s" % exc)
        return EX_TEMPFAIL
    say(words)
    return EX_OK


# -- poll -----------------------------------------------------------------------------

def run_poll(settings: ReflectorSettings, secret: bytes, clock: Callable[[], float] = time.time) -> int:
    """One pass over the far mailbox, or with --loop sessions that watch it for --loop-for seconds."""
    if not settings.loop:
        return _session(settings, secret, clock, None)
    end = time.monotonic() + settings.loop_for
    code = EX_OK
    for _ in range(MAX_PASSES):
        if time.monotonic() >= end:
            break
        code = _session(settings, secret, clock, end)
        if code != EX_OK and end - time.monotonic() > RETRY_PAUSE:
            time.sleep(RETRY_PAUSE)  # the server went away: a new session a little later
    return code


def _session(settings: ReflectorSettings, secret: bytes, clock: Callable[[], float], end: Optional[float]) -> int:
    """One IMAP session: a pass, and until *end* (monotonic; None: no waiting) a pass
    after each sign of new mail (IDLE, else a NOOP poll)."""
    ep = settings.imap
    assert ep is not None  # poll reads its IMAP mailbox (see settings_from)
    key = "%s@%s:%d/%s" % (ep.user, ep.host, ep.port, settings.folder)
    waiting = max(0.0, end - time.monotonic()) if end is not None else 0.0
    deadline = Budget(settings.timeout + waiting).share(1.0)
    try:
        with Store(settings.state_dir) as store:
            memory = store.mailboxes.get(key)
        memory = memory if isinstance(memory, dict) else {}
        with cast("ImapCollector", open_collector(ep, settings.folder, deadline, memory=memory, idle=True)) as collector:
            code = _pass(collector, key, settings, secret, deadline, clock)
            if end is None:
                return code
            until = Deadline(min(time.monotonic() + waiting, deadline.at - settings.timeout))
            for _ in range(MAX_PASSES):
                if not collector.wait(until):
                    break
                code = _pass(collector, key, settings, secret, deadline, clock)
            return code
    except (StepFailure, Failure) as exc:
        say("poll: %s" % exc)
        return EX_FAIL


def _pass(collector: ImapCollector, key: str, settings: ReflectorSettings, secret: bytes, deadline: Deadline,
          clock: Callable[[], float]) -> int:
    """Read the new candidates, reflect the verified probes, remove those sent back."""
    assert settings.imap is not None  # poll reads its IMAP mailbox (see settings_from)
    fetched = collector.fetch(collector.find(VERSION + "."), REFLECTOR_HEADERS)
    examined: list[Any] = []
    to_remove: list[Any] = []
    code = EX_OK
    with Store(settings.state_dir) as store:
        for note in store.notes:
            say(note)
        store.mailboxes[key] = collector.memory
        for item in fetched:
            received = item.internaldate if item.internaldate is not None else clock()
            try:
                outcome, words = reflect_one(item.headers, None, address(settings.imap.user), received,
                                             store, secret, settings, deadline, clock)
            except Temporary as exc:
                say("sending back failed for now, left for the next pass: %s" % exc)
                code = EX_FAIL
                break
            say(words)
            examined.append(item.ref)
            if outcome in ("reflected", "again"):
                to_remove.append(item.ref)
        collector.settle(examined, to_remove)
        store.save()  # what was sent back is remembered before it is removed
        if to_remove:
            collector.remove(to_remove)
            store.save()  # what is gone is not looked at again
    for note in collector.notes:
        say(note)
    del collector.notes[:]
    return code


# -- command line ----------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise cli.UsageError(message)


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="The far end of a check_mail_roundtrip loop: sends the probes it "
                                       "receives back to the check that signed them, if they verify with the "
                                       "shared secret, stamped with when they came and went.",
                epilog="Passwords as for check_mail_roundtrip: --smtp-password-file/--imap-password-file, or "
                       "$%s and $%s. See README, 'The reflector'." % (cli.ENV_SMTP_PASSWORD, cli.ENV_IMAP_PASSWORD))
    p.add_argument("-V", "--version", action="version", version="%s %s" % (PROG, __version__))
    sub = p.add_subparsers(dest="mode", required=True, parser_class=_Parser)
    pipe = sub.add_parser("pipe", help="reflect the one message on stdin (from .forward, aliases, Postfix pipe, Sieve)")
    pipe.add_argument("--sender", help="envelope sender of the message (default: $SENDER; empty: a bounce)")
    pipe.add_argument("--recipient", help="envelope recipient (default: $ORIGINAL_RECIPIENT, else $RECIPIENT)")
    poll = sub.add_parser("poll", help="reflect the probes in a mailbox read over IMAP")
    poll.add_argument("--loop", action="store_true", help="keep watching the folder (IMAP IDLE) for --loop-for seconds")
    poll.add_argument("--loop-for", type=cli.seconds, default=3600.0, metavar="SECONDS",
                      help="with --loop: end after this long, e.g. for systemd to start it again (default: 3600)")
    for mode in (pipe, poll):
        _common(mode, imap=mode is poll)
    return p


def _common(p: argparse.ArgumentParser, imap: bool) -> None:
    a = p.add_argument
    a("-H", "--host", help="mail server for SMTP%s unless --smtp-host%s say otherwise"
      % (" and IMAP" if imap else "", "/--imap-host" if imap else ""))
    a("--secret-file", required=True, metavar="FILE",
      help="the signing secret the checks use (the same file's contents; required)")
    a("--state-dir", default=DEFAULT_STATE_DIR, metavar="DIR",
      help="where the reflector keeps what it reflected (default: %s)" % DEFAULT_STATE_DIR)
    a("--from", dest="mail_from", metavar="ADDRESS",
      help="sender of the reflections, envelope and From (default: the address the probe came to)")
    a("--sendmail", metavar="PATH", help="send back with the local MTA's sendmail program instead of SMTP")
    a("--max-per-minute", type=int, default=10, metavar="N",
      help="reflections to one address per minute at most (default: 10)")
    a("--max-age", type=cli.seconds, default=86400.0, metavar="SECONDS",
      help="never reflect a probe sent longer ago than this (default: 86400)")
    a("-t", "--timeout", type=cli.timeout_seconds, default=60.0, metavar="SECONDS",
      help="time for one message or one poll pass (default: 60)")
    family = p.add_mutually_exclusive_group()
    family.add_argument("-4", "--ipv4", dest="family", action="store_const", const="ipv4", help="IPv4 only")
    family.add_argument("-6", "--ipv6", dest="family", action="store_const", const="ipv6", help="IPv6 only")
    g = p.add_argument_group("TLS")
    g.add_argument("--ca-file", metavar="FILE", help="trust these CA certificates (PEM) instead of the system store")
    g.add_argument("--insecure", action="store_true", help="do NOT verify server certificates (avoid)")
    cli.side_options(p, "smtp", auth=False)
    if imap:
        cli.side_options(p, "imap", auth=False).add_argument("--imap-folder", default="INBOX",
                                                  help="folder the probes arrive in (default: INBOX)")


def settings_from(args: argparse.Namespace) -> ReflectorSettings:
    """The settings the parsed options give, endpoints filled in; cli.UsageError on a bad combination."""
    if args.insecure and args.ca_file:
        raise cli.UsageError("--insecure and --ca-file exclude each other")
    if args.max_per_minute < 1:
        raise cli.UsageError("--max-per-minute must be at least 1")
    ctx = cli.client_context(args.ca_file, args.insecure)
    smtp_endpoint = None
    if not args.sendmail:
        smtp_endpoint = cli.endpoint(args, "smtp", ctx, {}, None)
        if smtp_endpoint.user and not smtp_endpoint.password:
            raise cli.UsageError("--smtp-user needs a password: --smtp-password-file or $%s" % cli.ENV_SMTP_PASSWORD)
    if args.mode == "poll":
        if not (args.imap_user or args.mail_from):
            raise cli.UsageError("poll needs --imap-user (or --from)")
        imap_endpoint = cli.endpoint(args, "imap", ctx, {}, None, default_user=args.mail_from)
        if not imap_endpoint.password:
            raise cli.UsageError("no IMAP password: give --imap-password-file or set $%s" % cli.ENV_IMAP_PASSWORD)
        mode = dict(imap=imap_endpoint, folder=args.imap_folder, loop=args.loop, loop_for=args.loop_for)
    else:
        mode = dict(sender=args.sender, recipient=args.recipient)
    return ReflectorSettings(args.mode, args.secret_file, args.state_dir, args.timeout, args.max_per_minute,
                             args.max_age, mail_from=args.mail_from, smtp=smtp_endpoint, helo=args.smtp_helo,
                             sendmail=args.sendmail, **mode)


def secret_of(settings: ReflectorSettings) -> bytes:
    """The signing secret from the settings' secret file; Failure when it cannot be read."""
    try:
        return read_secret(settings.secret_file)
    except FileNotFoundError:
        raise Failure("secret file %s does not exist (copy the checks' secret there)" % settings.secret_file)
    except StateError as exc:
        raise Failure(str(exc))


def main(argv: Optional[list[str]] = None) -> NoReturn:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] != ["pipe"]:
        sys.exit(_run(argv, piped=False))
    try:
        code = _run(argv, piped=True)
    except Exception as exc:  # noqa: BLE001  the last resort: an MTA turns exit 1 into a bounce
        code = _dropped(exc)
    sys.exit(code)


def _run(argv: list[str], piped: bool) -> int:
    """The command's exit code."""
    try:
        settings = settings_from(parser().parse_args(argv))
        secret = secret_of(settings)
    except cli.UsageError as exc:
        say("usage error: %s (see --help)" % exc)
        return EX_TEMPFAIL if piped else EX_USAGE  # a piped message waits until the setup is fixed
    except Failure as exc:
        say("cannot work: %s" % exc)
        return EX_TEMPFAIL if piped else EX_FAIL
    if settings.mode == "pipe":
        return run_pipe(settings, secret)
    return run_poll(settings, secret)


def _dropped(exc: Exception) -> int:
    """A piped mail that met an unexpected error is dropped (exit 0, never a bounce to its
    sender), with one line saying why; a probe verified by then was recorded already."""
    words = " ".join(str(exc).split())[:300] or "no details"
    try:
        say("mail dropped after an internal error: %s: %s" % (type(exc).__name__, words))
    except Exception:  # noqa: BLE001  (no stderr, no syslog: the exit code still counts)
        pass
    return EX_OK


if __name__ == "__main__":
    main()
