"""IMAP fault servers: IMAPScript (greeting, CAPABILITY, STARTTLS, a scripted or Courier/Cyrus-like
mailbox) and IdleNews (an IDLE answer)."""

import re


class IMAPScript:
    """A tiny IMAP server: greeting, CAPABILITY, STARTTLS, LOGOUT; BAD for the rest.

    Enough to reach the TLS handshake (implicit with FaultServer(tls=...), or
    STARTTLS with *starttls* = a server SSLContext).

    With *folders* (names as on the wire, modified UTF-7) it is a mailbox
    server that behaves like Courier or Cyrus: personal namespace *namespace*
    (prefix, separator), LOGIN accepts anyone, SELECT/EXAMINE open a listed
    folder and answer ``NO Mailbox does not exist`` otherwise, LIST and
    NAMESPACE answer from the folders, UID SEARCH finds nothing.  *missing*
    is the answer to SELECT of another folder ("{name}": the name as sent).

    replies: {COMMAND: reply} overriding any of that; "{tag}" in the reply
    stands for the command's tag, '\\n' separates lines; a callable reply
    (a :class:`Flood`) is called with the connection and the tag instead.
    *capabilities* are announced in addition to IMAP4rev1 (and STARTTLS LOGINDISABLED with
    *starttls*).  ``commands`` lists the commands received, in order.
    """

    def __init__(self, starttls=None, greeting="* OK [CAPABILITY IMAP4rev1] fault server ready",
                 folders=None, namespace=("INBOX.", "."), replies=None, capabilities="",
                 missing="{tag} NO Mailbox does not exist"):
        self.starttls = starttls
        self.greeting = greeting
        self.folders = list(folders) if folders is not None else None
        self.namespace = namespace
        self.missing = missing
        self.replies = dict(replies or {})
        self.capabilities = capabilities
        self.commands = []

    def __call__(self, conn):
        conn.reply(self.greeting)
        tls_active = False
        for _ in range(100):
            line = conn.readline().decode("utf-8", "replace").strip()
            tag, _, rest = line.partition(" ")
            cmd, _, args = rest.partition(" ")
            cmd = cmd.upper()
            if cmd == "UID":
                sub, _, args = args.partition(" ")
                cmd = "UID " + sub.upper()
            self.commands.append(cmd)
            if callable(self.replies.get(cmd)):  # e.g. a Flood
                self.replies[cmd](conn, tag)
            elif cmd in self.replies:
                conn.reply(self.replies[cmd].replace("{tag}", tag))
            elif cmd == "CAPABILITY":
                caps = "IMAP4rev1"
                if self.starttls and not tls_active:
                    caps += " STARTTLS LOGINDISABLED"
                caps += (" " + self.capabilities) if self.capabilities else ""
                conn.reply("* CAPABILITY %s\n%s OK CAPABILITY completed" % (caps, tag))
            elif cmd == "STARTTLS" and self.starttls and not tls_active:
                conn.reply("%s OK Begin TLS negotiation now" % tag)
                conn.starttls(self.starttls)
                tls_active = True
            elif cmd == "LOGOUT":
                conn.reply("* BYE fault server logging out\n%s OK LOGOUT completed" % tag)
                return
            elif self.folders is not None and cmd in self._MAILBOX:
                conn.reply(self._MAILBOX[cmd](self, tag, _arguments(args)))
            else:
                conn.reply("%s BAD command not supported here" % tag)

    def _login(self, tag, args):
        return "%s OK LOGIN Ok." % tag

    def _select(self, tag, args):
        name = args[0] if args else ""
        if not any(_same_folder(name, f) for f in self.folders):
            return self.missing.replace("{tag}", tag).replace("{name}", name)
        return ("* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\n* 0 EXISTS\n* 0 RECENT\n"
                "* OK [UIDVALIDITY 1] Ok\n%s OK [READ-WRITE] Ok" % tag)

    def _list(self, tag, args):
        ref, pattern = (args + ["", ""])[:2]
        sep = self.namespace[1]
        out = []
        if pattern == "":
            out.append('* LIST (\\Noselect) "%s" ""' % sep)
        else:
            wanted = _list_pattern(ref + pattern, sep)
            out += ['* LIST (\\HasNoChildren) "%s" "%s"' % (sep, f) for f in self.folders
                    if wanted.fullmatch(f)]
        return "\n".join(out + ["%s OK LIST completed" % tag])

    def _namespace(self, tag, args):
        prefix, sep = self.namespace
        return '* NAMESPACE (("%s" "%s")) NIL (("#shared%s" "%s"))\n%s OK NAMESPACE completed' % (
            prefix, sep, sep, sep, tag)

    def _search(self, tag, args):
        return "* SEARCH\n%s OK SEARCH done." % tag

    _MAILBOX = {"LOGIN": _login, "SELECT": _select, "EXAMINE": _select, "LIST": _list,
                "NAMESPACE": _namespace, "UID SEARCH": _search}


def _arguments(text):
    """The arguments of an IMAP command line: atoms and quoted strings (no literals)."""
    return [atom or re.sub(r"\\(.)", r"\1", quoted)
            for quoted, atom in re.findall(r'"((?:[^"\\]|\\.)*)"|(\S+)', text)]


def _same_folder(a, b):
    return a == b or (a.upper() == "INBOX" and b.upper() == "INBOX")


def _list_pattern(pattern, sep):
    """A LIST pattern as a regular expression: * anything, % anything but the separator."""
    parts = [".*" if c == "*" else "[^%s]*" % re.escape(sep) if c == "%" else re.escape(c)
             for c in pattern]
    return re.compile("".join(parts), re.I if pattern.upper().startswith("INBOX") else 0)


class IdleNews:
    """An IDLE answer (a reply of :class:`IMAPScript`): *before* (untagged lines),
    the "+" continuation, then news of a new mail; after the client's DONE the
    tagged OK.  Each IDLE then takes a little more than *before*."""

    def __init__(self, before):
        self.before = before
        self.idles = 0

    def __call__(self, conn, tag):
        self.idles += 1
        conn.send(self.before + b"+ idling\r\n* 1 EXISTS\r\n")
        conn.readline()  # DONE
        conn.reply("%s OK IDLE terminated" % tag)
