"""Command line for the mail lab.

    python3 -m tests.lab install
    python3 -m tests.lab start [--dir D]          # prints the lab as JSON
    python3 -m tests.lab status [--dir D]
    python3 -m tests.lab fault hold|release|drop|delay N|junk|imap-down|imap-up|clear|reset [--dir D]
                                                  (clear: no fault, mail kept; reset: also empties the mailboxes)
    python3 -m tests.lab fill USER N [--folder F] [--dir D]
    python3 -m tests.lab count USER [FOLDER] [--dir D]
    python3 -m tests.lab send [--to ADDR] [--subject S] [--dir D]
    python3 -m tests.lab oauth2 client|refresh-token|access-token USER [--expires-in N] [--dir D]
    python3 -m tests.lab oauth2 expires-in N | revoke [TOKEN] | unrevoke | counts [--dir D]
    python3 -m tests.lab stop [--dir D]

The default directory is /tmp/check_mail_roundtrip-lab; <dir>/lab.json holds
host, ports, CA file, users and the OAuth2 token service once the lab runs.
"""

import argparse
import json
import sys

from .lab import DEFAULT_DIR, LabError, MailLab, install

FAULTS = ("hold", "release", "drop", "delay", "junk", "imap-down", "imap-up", "clear", "reset")
OAUTH2_ACTIONS = ("client", "refresh-token", "access-token", "expires-in", "revoke",
                  "unrevoke", "counts")


def _parser():
    ap = argparse.ArgumentParser(prog="python3 -m tests.lab",
                                 description="Private Postfix + Dovecot mail lab on 127.0.0.1")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--dir", default=DEFAULT_DIR,
                        help="lab directory (default: %(default)s)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("install", help="install the Debian packages (as root)")
    st = sub.add_parser("start", parents=[common], help="start a lab, print it as JSON")
    st.add_argument("--port", action="append", default=[], metavar="NAME=PORT",
                    help="fix a port (all seven mail port names are needed if any is "
                         "given; oauth2=PORT fixes the token service's)")
    sub.add_parser("stop", parents=[common], help="stop the lab and remove its directory")
    sub.add_parser("status", parents=[common], help="is it running? print it as JSON")
    f = sub.add_parser("fault", parents=[common], help="set or clear a fault")
    f.add_argument("fault", choices=FAULTS)
    f.add_argument("seconds", nargs="?", type=float, help="for delay")
    fi = sub.add_parser("fill", parents=[common], help="put N filler messages in a mailbox")
    fi.add_argument("user")
    fi.add_argument("n", type=int)
    fi.add_argument("--folder", default="INBOX")
    c = sub.add_parser("count", parents=[common], help="total and unseen messages")
    c.add_argument("user")
    c.add_argument("folder", nargs="?", default="INBOX")
    s = sub.add_parser("send", parents=[common], help="send a test mail over SMTP")
    s.add_argument("--to", default="monitor@lab.test")
    s.add_argument("--sender", default="other@lab.test")
    s.add_argument("--subject")
    s.add_argument("--port", default="smtp", choices=("smtp", "submission", "smtps"))
    o = sub.add_parser("oauth2", parents=[common], help="the OAuth2 token service")
    o.add_argument("action", choices=OAUTH2_ACTIONS)
    o.add_argument("arg", nargs="?", help="USER, seconds for expires-in, or a TOKEN to revoke")
    o.add_argument("--expires-in", type=int, help="for access-token")
    return ap


def _oauth2(tokens, action, arg, expires_in=None):
    """What the oauth2 subcommand prints for an action."""
    if action in ("client", "refresh-token", "access-token") and not arg:
        raise LabError("oauth2 %s needs a USER" % action)
    if action == "client":
        client_id, secret = tokens.client(arg)
        return json.dumps({"client_id": client_id, "client_secret": secret,
                           "token_url": tokens.token_url}, indent=2)
    if action == "refresh-token":
        return tokens.refresh_token(arg)
    if action == "access-token":
        return tokens.access_token(arg, expires_in=expires_in)
    if action == "expires-in":
        if arg is None or not arg.isdigit():
            raise LabError("oauth2 expires-in needs a whole number of seconds")
        tokens.expires_in(int(arg))
    elif action == "revoke":
        tokens.revoke(arg)
    elif action == "unrevoke":
        tokens.unrevoke()
    return json.dumps(tokens.counts(), sort_keys=True)


def main(argv=None):
    args = _parser().parse_args(argv)
    try:
        if args.cmd == "install":
            install()
            return 0
        if args.cmd == "start":
            ports = None
            if args.port:
                ports = {k: int(v) for k, v in (p.split("=", 1) for p in args.port)}
            lab = MailLab(dir=args.dir, ports=ports, keep=True)
            lab.start()
            print(json.dumps(lab.describe(), indent=2, sort_keys=True))
            return 0
        lab = MailLab.attach(args.dir)
        if args.cmd == "stop":
            lab.stop(keep=False)
            return 0
        if args.cmd == "status":
            info = lab.describe()
            info["running"] = lab.is_running()
            info["faults"] = lab.faults()
            print(json.dumps(info, indent=2, sort_keys=True))
            return 0 if info["running"] else 1
        if not lab.is_running():
            raise LabError("the lab in %s is not running" % args.dir)
        if args.cmd == "fault":
            name = args.fault.replace("-", "_")
            if name == "delay":
                if args.seconds is None:
                    raise LabError("fault delay needs the number of seconds")
                lab.delay(args.seconds)
            else:
                getattr(lab, name)()
            print(json.dumps(lab.faults(), sort_keys=True))
        elif args.cmd == "fill":
            lab.fill(args.user, args.n, folder=args.folder)
            print("%d %d" % lab.count(args.user, args.folder))
        elif args.cmd == "count":
            print("%d %d" % lab.count(args.user, args.folder))
        elif args.cmd == "send":
            print(lab.send(to=args.to, sender=args.sender, subject=args.subject,
                           port=args.port))
        elif args.cmd == "oauth2":
            print(_oauth2(lab.tokens, args.action, args.arg, args.expires_in))
        return 0
    except LabError as exc:
        print("lab: error: %s" % exc, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
