"""A collector session with a mailbox in memory: the Collector protocol as IMAP keeps it.

Like :class:`check_mail_roundtrip.imap.ImapCollector`: ``find`` searches the
Subjects (decoded, without regard to case) of the mails not flagged
\\Deleted in the Junk folder (when wanted and there) and the collection
folder, only above the highest UID examined before (remembered with the
folder's UIDVALIDITY in ``memory``), plus the probes still to be removed;
``fetch`` gives the real header bytes and INTERNALDATE (``trace`` the same
headers, noting the refs asked for in ``MailSystem.traced``); ``remove`` flags
\\Deleted and expunges exactly those (UIDPLUS; without it a plain EXPUNGE with
*dedicated*, else they stay flagged and ``unexpunged`` counts them); ``wait``
moves the clock on to the next delivery (IDLE) or by a second (a poll), never
past its end.  With an endpoint whose protocol is POP3 it reads INBOX only,
every mail not examined before (no search), and the arrival time from the
topmost ``Received:`` date, as :mod:`check_mail_roundtrip.pop3` does.

Each step can be made to fail (MailSystem.fail): connect and login when the
session opens, select, search, fetch, delete and wait where they happen.
"""

import datetime
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Optional

from check_mail_roundtrip.failure import StepFailure
from check_mail_roundtrip.mail import Fetched
from check_mail_roundtrip.pop3 import received_date

if TYPE_CHECKING:
    from .system import Folder, MailSystem

POLL_EVERY = 1.0


class Ref(NamedTuple):
    """A mail examined: its folder and UID."""

    folder: str
    uid: int


class MemoryCollector:
    """One session with the mailbox of *endpoint*'s user in *system* (see the module doc)."""

    def __init__(self, system: "MailSystem", endpoint: Any, folder: str, readonly: bool = False,
                 memory: Optional[dict] = None, dedicated: bool = False, junk: object = None,
                 idle: bool = True) -> None:
        self.system = system
        self.protocol = endpoint.protocol
        self.pop3 = self.protocol == "POP3"
        self.box = system.mailbox(endpoint.user)
        self.folder = "INBOX" if self.pop3 else folder
        self.readonly = readonly
        self.dedicated = dedicated
        self.junk_wanted = None if self.pop3 else junk
        self.idle = idle
        self.memory = memory if memory is not None else {}
        self.notes: list[str] = []
        self.unexpunged: Optional[int] = None
        self.watching: Optional[str] = None
        self.key = ""
        self.found: dict[str, set[int]] = {}   # folder name -> UIDs found in this session
        self.junk: Optional[str] = None        # the Junk folder's name, once looked for
        self.looked = False

    def _step(self, what: str) -> None:
        self.system.fault("%s %s" % (self.protocol, what))

    # -- session -------------------------------------------------------------------------------
    def __enter__(self) -> "MemoryCollector":
        self._step("connect")
        self._step("login")
        self.system.sessions += 1
        if not self.pop3:
            self._step("select")
            if self.folder not in self.box.folders:
                raise StepFailure("IMAP select", 'folder "%s" not found (server: Mailbox doesn\'t exist: %s)'
                                  % (self.folder, self.folder))
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    # -- folders and what was examined in them ---------------------------------------------------
    def _folders(self) -> list[str]:
        """The folders to read: the Junk folder (when wanted and there), then the collection folder."""
        if not self.looked:
            self.looked = True
            wanted = self.box.junk if self.junk_wanted is True else self.junk_wanted
            if self.junk_wanted is True and wanted is None:
                self.notes.append("no Junk folder found (by the \\Junk attribute or the usual names)")
            elif wanted is not None and wanted not in self.box.folders:
                self.notes.append('Junk folder "%s" not looked into: it does not open' % wanted)
            elif wanted is not None and wanted != self.folder:
                self.junk = wanted
        return [f for f in (self.junk, self.folder) if f is not None]

    def _memory(self, name: str) -> dict:
        """What was examined in folder *name* before: {"uidvalidity", "floor", "recheck"}."""
        if self.memory.get("kind") != "memory":
            self.memory.clear()
            self.memory.update(kind="memory", folders={})
        folder = self.box.folders[name]
        m = self.memory["folders"].setdefault(name, {})
        if m.get("uidvalidity") != folder.uidvalidity:
            if m:
                self.notes.append("folder %s changed (UIDVALIDITY): searching all of it" % name)
            m.clear()
            m.update(uidvalidity=folder.uidvalidity, floor=0, recheck=[])
        elif m.get("kept") and not self.readonly:
            self.notes.append("probes left by --keep runs in %s: searching the whole folder once" % name)
            m.update(floor=0, kept=False)
        return m

    def _wanted(self, message: Any, before: Optional[datetime.date]) -> bool:
        if before is not None:
            arrived = datetime.datetime.fromtimestamp(message.internaldate, datetime.timezone.utc).date()
            return arrived < before and self.key.lower() in message.subject.lower()
        return self.pop3 or self.key.lower() in message.subject.lower()

    # -- the Collector ---------------------------------------------------------------------------
    def find(self, key: str, before: Optional[datetime.date] = None, wanted: Sequence[str] = ()) -> list[Ref]:
        self._step("search" if not self.pop3 else "list")
        self.system.deliver_due()
        self.key = key
        if before is not None and self.pop3:
            self.notes.append("POP3 cannot search by date: probes of abandoned profiles are not looked for")
            return []
        refs = []
        for name in self._folders():
            folder = self.box.folders[name]
            if before is not None:
                refs += [Ref(name, m.uid) for m in folder.live() if self._wanted(m, before)]
                continue
            m = self._memory(name)
            found = {msg.uid for msg in folder.live() if msg.uid > m["floor"] and self._wanted(msg, None)}
            self.found[name] = found
            again = {uid for uid in m["recheck"] if uid in folder.messages and not folder.messages[uid].deleted}
            refs += [Ref(name, uid) for uid in sorted(found | again)]
        return refs

    def fetch(self, refs: Sequence[Ref]) -> list[Fetched]:
        if refs:
            self._step("fetch")
        out = []
        for ref in refs:
            message = self.box.folders[ref.folder].messages.get(ref.uid)
            if message is None:  # expunged meanwhile
                continue
            if self.pop3:
                out.append(Fetched(ref, message.headers, received_date(message.headers), "Received"))
            else:
                out.append(Fetched(ref, message.headers, message.internaldate, junk=ref.folder == self.junk,
                                   folder=ref.folder))
        return out

    def trace(self, refs: Sequence[Ref]) -> dict[Any, bytes]:
        """The header blocks of *refs* (the trace fields among them), each ref noted in system.traced."""
        self._step("fetch")
        self.system.traced.extend(refs)
        messages = {ref: self.box.folders[ref.folder].messages.get(ref.uid) for ref in refs}
        return {ref: m.headers for ref, m in messages.items() if m is not None}

    def settle(self, examined: Sequence[Ref], to_remove: Sequence[Ref]) -> None:
        for name, found in self.found.items():
            m = self._memory(name)
            m["floor"] = max([m["floor"]] + [r.uid for r in examined if r.folder == name] + list(found))
            gone = sorted({r.uid for r in to_remove if r.folder == name})
            m["recheck"] = gone if not self.readonly else []
            if self.readonly and gone:
                m["kept"] = True

    def remove(self, refs: Sequence[Ref]) -> None:
        if not refs or self.readonly:
            return
        self._step("delete")
        for name in sorted({r.folder for r in refs}):
            folder = self.box.folders[name]
            uids = [r.uid for r in refs if r.folder == name and r.uid in folder.messages]
            for uid in uids:
                folder.messages[uid].deleted = True
            if self.box.uidplus:
                folder.expunge(uids)
            elif self.dedicated and name != self.junk:
                folder.expunge()
                self.notes.append("server lacks UIDPLUS: %d probe(s) removed with a plain EXPUNGE "
                                  "(--dedicated-mailbox)" % len(uids))
            else:
                left = len(self._flagged(folder))
                self.unexpunged = (self.unexpunged or 0) + left
                self.notes.append("server lacks UIDPLUS: %d probe(s) flagged \\Deleted, not expunged; "
                                  "%d wait for an EXPUNGE" % (len(uids), left))
            if name in self.found:
                self._memory(name)["recheck"] = []

    def _flagged(self, folder: "Folder") -> list:
        return [m for m in folder.messages.values() if m.deleted and self.key.lower() in m.subject.lower()]

    def name(self, ref: Ref) -> str:
        if self.pop3:
            return "UIDL m%d" % ref.uid
        return "UID %d%s" % (ref.uid, ' in "%s"' % ref.folder if ref.folder == self.junk else "")

    def wait(self, until: Any) -> bool:
        """Until new mail may have come (True) or *until* passes (False), moving the clock."""
        self._step("wait")
        clock = self.system.clock
        end = clock.epoch(until.at)
        if self.idle and not self.pop3:
            self.watching = "IDLE in memory"
            due = self.system.next_due()
            if due is not None and due <= end:
                clock.advance_to(due)
                return True
            clock.advance_to(end)
            return False
        every = 2 * POLL_EVERY if self.pop3 else POLL_EVERY
        self.watching = "a look every %gs in memory" % every
        pause = min(every, end - clock.now)
        if pause <= 0:
            return False
        clock.advance(pause)
        return True
