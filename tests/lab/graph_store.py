"""The Graph stand-in's mailbox side: one lab user's folders and messages, through the lab's real IMAP and SMTP.

Mailbox(lab, user) logs in to the lab's Dovecot over IMAP as the user (the
password from lab.users), so every lab fault that IMAP sees (imap-down, Junk
filing, mail held or dropped by Postfix) is what Graph sees too.  It never sets
\\Seen on a message it reads (EXAMINE and BODY.PEEK).  submit() hands a
message to the lab's Postfix on the submission port (STARTTLS, AUTH as the
user), as Exchange hands a sendMail to its transport.

Well-known folder names map to Dovecot folders by special-use attribute,
then by name: inbox INBOX, junkemail \\Junk or Junk, sentitems \\Sent or Sent,
deleteditems \\Trash or Trash, drafts, archive.  Sent and Trash are made on
first use (the lab's mailboxes have INBOX and Junk only); until then they list
as empty folders, as Exchange's always exist.
"""

import dataclasses
import datetime
import email
import email.policy
import imaplib
import re
import smtplib
import socket
import ssl
from typing import Optional

IMAP_TIMEOUT = 15.0
SMTP_TIMEOUT = 30.0
MAX_FETCH = 20000            # messages one look at a folder reads at most (a bound, undocumented in Graph)

# well-known name -> (special-use attribute, Dovecot folder name used when none has it, display name)
WELL_KNOWN = {
    "inbox": (None, "INBOX", "Inbox"),
    "junkemail": ("\\Junk", "Junk", "Junk Email"),
    "sentitems": ("\\Sent", "Sent", "Sent Items"),
    "deleteditems": ("\\Trash", "Trash", "Deleted Items"),
    "drafts": ("\\Drafts", "Drafts", "Drafts"),
    "archive": ("\\Archive", "Archive", "Archive"),
}
# folders Exchange always has: listed (empty) even before the stand-in made them in Dovecot
ALWAYS = ("inbox", "junkemail", "sentitems", "deleteditems")


class StoreUnavailable(Exception):
    """The lab's IMAP or SMTP server could not be reached or refused the user."""


@dataclasses.dataclass
class Folder:
    name: str                     # the Dovecot folder
    display_name: str
    well_known: Optional[str] = None
    total: int = 0
    unread: int = 0
    size: int = 0
    exists: bool = True


@dataclasses.dataclass
class Message:
    folder: str
    uidvalidity: int
    uid: int
    internaldate: datetime.datetime
    flags: set
    size: int
    raw: bytes = b""

    @property
    def parsed(self):
        if not hasattr(self, "_parsed"):
            self._parsed = email.message_from_bytes(self.raw, policy=email.policy.compat32)
        return self._parsed


def _quote(name):
    return '"%s"' % name.replace("\\", "\\\\").replace('"', '\\"')


def _unquote(text):
    text = text.strip()
    if text.startswith('"') and text.endswith('"'):
        return re.sub(r'\\(.)', r"\1", text[1:-1])
    return text


LIST_LINE = re.compile(rb'\((?P<attrs>[^)]*)\) (?P<sep>"[^"]*"|NIL) (?P<name>.+)$')
META = {
    "uid": re.compile(rb"\bUID (\d+)"),
    "date": re.compile(rb'\bINTERNALDATE "([^"]+)"'),
    "flags": re.compile(rb"\bFLAGS \(([^)]*)\)"),
    "size": re.compile(rb"\bRFC822\.SIZE (\d+)"),
}


def _internaldate(text):
    return datetime.datetime.strptime(text.decode().strip(), "%d-%b-%Y %H:%M:%S %z")


class Mailbox:
    """One IMAP session of one lab user (use as a context manager)."""

    def __init__(self, lab, user):
        self.lab = lab
        self.user = user
        self.imap = None
        self.selected = None
        self._folders = None

    def __enter__(self):
        password = self.lab.users[self.user]
        try:
            self.imap = imaplib.IMAP4(self.lab.host, self.lab.ports["imap"], timeout=IMAP_TIMEOUT)
            self.imap.login(self.user, password)
        except (OSError, imaplib.IMAP4.error) as exc:
            self.close()
            raise StoreUnavailable("IMAP: %s" % exc)
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def close(self):
        imap, self.imap = self.imap, None
        if imap is not None:
            try:
                imap.logout()
            except (OSError, imaplib.IMAP4.error):
                pass

    def _ok(self, typ, data, what):
        if typ != "OK":
            raise StoreUnavailable("IMAP %s: %s %s" % (what, typ, data))
        return data

    def _call(self, what, *args):
        try:
            return self._ok(*getattr(self.imap, what)(*args), what)
        except (OSError, imaplib.IMAP4.abort) as exc:
            raise StoreUnavailable("IMAP %s: %s" % (what, exc))

    # ------------------------------------------------------------- folders

    def folders(self):
        """Every folder of the mailbox (and the ones Exchange always has), with counts."""
        if self._folders is not None:
            return self._folders
        names = {}
        for line in self._call("list", '""', '"*"'):
            if not isinstance(line, bytes):
                continue
            m = LIST_LINE.match(line)
            if not m or b"\\Noselect" in m.group("attrs") or b"\\NonExistent" in m.group("attrs"):
                continue
            names[_unquote(m.group("name").decode("utf-8", "replace"))] = m.group("attrs").decode().split()
        out = []
        taken = set()
        for key, (attr, fallback, display) in WELL_KNOWN.items():
            name = next((n for n, attrs in names.items() if attr and attr in attrs), None)
            if name is None and fallback in names:
                name = fallback
            if name is None and key in ALWAYS:
                out.append(Folder(fallback, display, key, exists=False))
                taken.add(fallback)
            elif name is not None:
                out.append(Folder(name, display, key))
                taken.add(name)
        out += [Folder(n, n) for n in sorted(names) if n not in taken and n.upper() != "INBOX"]
        self._folders = out
        return out

    def counted(self, folder):
        """*folder* with its counts (IMAP STATUS) filled in."""
        if folder.exists:
            data = self._call("status", _quote(folder.name), "(MESSAGES UNSEEN SIZE)")
            text = b" ".join(d for d in data if isinstance(d, bytes))
            nums = {k.decode(): int(v) for k, v in re.findall(rb"(MESSAGES|UNSEEN|SIZE) (\d+)", text)}
            folder.total, folder.unread, folder.size = (nums.get(k, 0) for k in ("MESSAGES", "UNSEEN", "SIZE"))
        return folder

    def folder(self, name=None, well_known=None):
        """The folder with the Dovecot *name*, or the *well_known* name (any case); None."""
        for folder in self.folders():
            if folder.name == name or (well_known and folder.well_known == well_known.lower()):
                return folder
        return None

    def well_known(self, key):
        return next(f for f in self.folders() if f.well_known == key)

    def _ensure(self, folder):
        if not folder.exists:
            typ, data = self.imap.create(_quote(folder.name))
            if typ != "OK" and b"ALREADYEXISTS" not in b" ".join(d for d in data if isinstance(d, bytes)):
                raise StoreUnavailable("IMAP CREATE %s: %s" % (folder.name, data))
            folder.exists = True

    def select(self, name, readonly=True):
        """Select (EXAMINE when readonly) a folder; its UIDVALIDITY."""
        self._call("select", _quote(name), readonly)
        self.selected = name
        return int(self.imap.response("UIDVALIDITY")[1][0])

    # ------------------------------------------------------------ messages

    def search(self, name, since=None, subject=None):
        """UIDs in a folder received on or after *since*'s day (a day earlier, to be
        safe about time zones) whose Subject contains *subject*."""
        self.select(name)
        args = []
        if since is not None:
            day = (since - datetime.timedelta(days=1)).strftime("%d-%b-%Y")
            args += ["SINCE", day]
        if subject:
            self.imap.literal = subject.encode("utf-8")
            args = ["CHARSET", "UTF-8"] + args + ["SUBJECT"]
        data = self._call("uid", "SEARCH", *(args or ["ALL"]))
        uids = [int(u) for u in b" ".join(d for d in data if d).split()]
        return uids[-MAX_FETCH:]

    def fetch(self, name, uids, part="HEADER"):
        """[Message] of the UIDs in folder *name* (part: HEADER, HEADER.FIELDS (...) or "" for all)."""
        if not uids:
            return []
        uidvalidity = self.select(name)
        out = []
        for start in range(0, len(uids), 500):
            chunk = ",".join(str(u) for u in uids[start:start + 500])
            data = self._call("uid", "FETCH", chunk,
                              "(UID INTERNALDATE FLAGS RFC822.SIZE BODY.PEEK[%s])" % part)
            out += self._parse_fetch(name, uidvalidity, data)
        return out

    def _parse_fetch(self, name, uidvalidity, data):
        out = []
        items = list(data)
        for i, item in enumerate(items):
            if not isinstance(item, tuple):
                continue
            meta, raw = item[0], item[1]
            tail = items[i + 1] if i + 1 < len(items) and isinstance(items[i + 1], bytes) else b""
            meta += b" " + tail
            found = {k: rx.search(meta) for k, rx in META.items()}
            if not all(found.values()):
                continue
            out.append(Message(name, uidvalidity, int(found["uid"].group(1)),
                               _internaldate(found["date"].group(1)),
                               set(found["flags"].group(1).decode().split()),
                               int(found["size"].group(1)), raw))
        return out

    def get(self, name, uidvalidity, uid, part="HEADER"):
        """The message (None: gone, or the folder's UIDVALIDITY changed)."""
        folder = self.folder(name)
        if folder is None or not folder.exists:
            return None
        got = self.fetch(name, [uid], part)
        if not got or got[0].uidvalidity != uidvalidity or got[0].uid != uid:
            return None
        return got[0]

    def expunge(self, name, uid):
        """Remove one message for good (UID EXPUNGE)."""
        self.select(name, readonly=False)
        self._call("uid", "STORE", str(uid), "+FLAGS.SILENT", "(\\Deleted)")
        self._call("uid", "EXPUNGE", str(uid))

    def move(self, name, uid, dest):
        """Move one message to folder *dest* (a Folder, made if missing)."""
        self._ensure(dest)
        self.select(name, readonly=False)
        self._call("uid", "MOVE", str(uid), _quote(dest.name))

    def append(self, dest, data, flags="(\\Seen)"):
        """Store a message in folder *dest* (a Folder, made if missing)."""
        self._ensure(dest)
        self._call("append", _quote(dest.name), flags, None, data)


def submit(lab, user, recipients, data):
    """Hand *data* to the lab's Postfix on the submission port, authenticated as *user*;
    {recipient: (code, words)} of the recipients Postfix refused."""
    context = ssl.create_default_context(cafile=lab.ca_file)
    try:
        with smtplib.SMTP(lab.host, lab.ports["submission"], timeout=SMTP_TIMEOUT) as smtp:
            smtp.ehlo("graph.lab.test")
            smtp.starttls(context=context)
            smtp.ehlo("graph.lab.test")
            smtp.login(user, lab.users[user])
            return {r: (c, w.decode("utf-8", "replace"))
                    for r, (c, w) in smtp.sendmail(user, recipients, data).items()}
    except smtplib.SMTPRecipientsRefused as exc:
        return {r: (c, w.decode("utf-8", "replace")) for r, (c, w) in exc.recipients.items()}
    except (OSError, smtplib.SMTPException, socket.timeout) as exc:
        raise StoreUnavailable("SMTP: %s" % exc)
