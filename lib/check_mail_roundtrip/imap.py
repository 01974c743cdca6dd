"""IMAP transport: find, read and remove this profile's returned probes.

Cost does not grow with the mailbox: one server-side ``UID SEARCH SUBJECT``
for the profile's key, then only the probe headers and INTERNALDATE of the
hits (``BODY.PEEK``: no \\Seen set).  Removal is by UID only: ``\\Deleted``
plus ``UID EXPUNGE`` where the server has UIDPLUS; never a bare EXPUNGE,
which would also remove other \\Deleted mail.  With ``keep`` the folder is
opened read-only (EXAMINE) and nothing is changed.

Steps, as named in the status line: ``IMAP connect``, ``IMAP TLS``,
``IMAP login``, ``IMAP select``, ``IMAP search``, ``IMAP fetch``,
``IMAP delete``.

The server's words are kept as it sent them (UTF-8, modified UTF-7 folder
names decoded).  A folder that does not open is explained: only after the
failed SELECT, NAMESPACE and a LIST of one hierarchy level show the server's
folder layout and a folder the user may have meant.

A collector is used as a context manager and offers ``find(key)``,
``fetch(refs)`` and ``remove(refs)``; other collectors (POP3) follow the
same shape.
"""

from __future__ import annotations

import imaplib
import logging
import re
import select
import ssl
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Optional

import imapclient

from . import candidates, folders, junk as junk_folder, probe as probe_format, record, sasl
from .budget import Deadline
from .connection import Connection
from .failure import StepFailure, attempt, step
from .imap_session import _COMPLETION, WIRE, ServerSaid, _Client, _text, server_words
from .lazy_re import LazyPattern
from .mail import TRACE_BYTES, TRACE_HEADERS, Fetched
from .settings import Endpoint

if TYPE_CHECKING:
    import datetime


# imapclient warns through the logging module (on stderr when nothing else is
# set up); a check's output is its status line.
logging.getLogger("imapclient").addHandler(logging.NullHandler())

# At most this many hits are read per run (the newest); more means the
# mailbox is flooded with probes and the rest waits for the next runs.
MAX_FETCH = 200     # candidates per FETCH command
MAX_READ = 2000     # candidates read per run at most (see candidates.py: which, and the rest later)
IDLE_MAX = 25 * 60  # one IDLE at most this long (servers may end an IDLE after 30 minutes)
POLL_EVERY = 1.0    # seconds between NOOPs when waiting without IDLE
MAX_IDLE_LINES = 100  # untagged lines before IDLE's "+" at most
NONE_RELOOK = 300.0   # seconds "no Junk folder" is believed (the folder may come with the first spam)
# Only the probe headers, and at most their first 8 KiB (a hostile mail with a
# huge subject costs no more than a real probe).
def _header_item(fields: Iterable[str], size: int = 8192) -> str:
    return "BODY.PEEK[HEADER.FIELDS (%s)]<0.%d>" % (" ".join(h.upper() for h in fields), size)


_HEADER_ITEM = _header_item(probe_format.FETCH_HEADERS)



class Ref(NamedTuple):
    """A mail examined by the collector: its UID, and whether it is in the Junk folder."""

    uid: int
    junk: bool = False


@record.record(eq=False)
class _Folder:
    """One folder the collector reads: the collection folder, or the Junk folder."""

    name: str
    junk: bool = False
    uidvalidity: Optional[int] = None
    searched: bool = False     # searched in this session: its memory is current
    found: set[int] = record.field(default_factory=set)  # candidates found in this session
    read: set[int] = record.field(default_factory=set)   # candidates handed out to be read in it


class ImapCollector:
    """A session with the collection folder and, where asked, the Junk folder.

    *junk*: None (not looked into), JUNK_AUTO (found by :mod:`junk`, the
    answer remembered in *memory*: see _look_for_junk), or a folder name.
    Refs are :class:`Ref`.
    """

    def __init__(self, endpoint: Endpoint, folder: str, deadline: Deadline, readonly: bool = False,
                 memory: Optional[dict[str, Any]] = None, dedicated: bool = False, junk: object = None,
                 daily: bool = False, idle: bool = True, now: Optional[float] = None) -> None:
        self.ep = endpoint
        self.folder = folder
        self.deadline = deadline
        self.readonly = readonly
        self.dedicated = dedicated  # the folder is the check's alone: a plain EXPUNGE is allowed
        self.memory = memory if memory is not None else {}
        self.junk_wanted = junk
        self.daily = daily
        self.now = time.time() if now is None else now  # epoch seconds: when "none" was looked up
        self.idle = idle            # wait with IDLE where the server offers it (else: poll)
        self.main = _Folder(folder)
        self.junk: Optional[_Folder] = None  # the Junk folder once known to exist
        self.junk_looked = junk is None  # the Junk folder was looked for (or is not wanted)
        self.selected: Optional[_Folder] = None
        self.client: Optional[_Client] = None
        self.connection: Connection[_Client] = Connection(WIRE, endpoint, deadline)
        self.notes: list[str] = []
        self.unexpunged: Optional[int] = None  # probes flagged \\Deleted and left (server without UIDPLUS)
        self.watching: Optional[str] = None  # how wait() watches the folder, in words
        self._key = probe_format.VERSION + "."

    @property
    def uidvalidity(self) -> Optional[int]:
        return self.main.uidvalidity

    def _live(self) -> _Client:
        """The client of the session (the collector is used inside ``with``)."""
        assert self.client is not None
        return self.client

    # -- session -------------------------------------------------------------
    def __enter__(self) -> ImapCollector:
        self.client = self.connection.open(self._login)
        try:
            if self.client.has_capability("XMAGICTRASH") and not self.readonly:
                self.notes.append("the server moves expunged mail to Trash (Courier's XMAGICTRASH): "
                                  "removed probes collect there until it empties Trash")
            if self.junk_wanted is None:
                self._select(self.main)
        except BaseException:
            self._close()
            raise
        return self

    def _select(self, folder: _Folder) -> bool:
        """SELECT (EXAMINE with --keep) *folder* unless it is selected; False
        when the Junk folder does not open (a note, no failure)."""
        if self.selected is folder:
            return True
        self.selected = None
        with step("IMAP select", self.deadline):
            self._arm()
            try:
                selected = self._live().select_folder(folder.name, readonly=self.readonly)
            except ServerSaid as refused:
                if folder.junk:
                    self._junk_gone(refused.words)
                    return False
                raise StepFailure("IMAP select", self._not_opened(refused.words)) from refused
        folder.uidvalidity = selected.get(b"UIDVALIDITY")
        self.selected = folder
        return True

    def _login(self, client: _Client) -> None:
        """The login of *client* (the step ``IMAP login``)."""
        self.deadline.arm(client.socket())
        if self.ep.auth == "oauth2":
            self._oauth2_login(client)
        else:
            self._password_login(client)
        # keep the capabilities the server sent with its login answer (no extra round trip)
        client.capabilities()

    def _password_login(self, client: _Client) -> None:
        user, password = self.ep.user or "", self.ep.password or ""
        if (user + password).isascii():
            client.login(user, password)
        else:
            client.plain_login(user, password)

    def _oauth2_login(self, client: _Client) -> None:
        """AUTHENTICATE with the token; once more with a fresh token if the server refuses it."""
        offered = [c[5:] for c in (_text(c) for c in client.capabilities()) if c.upper().startswith("AUTH=")]
        from .oauth2 import sign_in  # only a run that signs in with OAuth2 loads it

        sign_in(self.ep, self.deadline, "IMAP login", offered,
                lambda mechanism, token: self._authenticate(client, mechanism, token), client._trace.hide)

    def _authenticate(self, client: _Client, mechanism: str, token: str) -> Optional[str]:
        """One AUTHENTICATE dialogue: None when logged in, else the server's words."""
        ep = self.ep
        said: list[Optional[bytes]] = []
        first = sasl.initial_response(mechanism, ep.user or "", token, ep.host, ep.port)

        def respond(challenge: bytes) -> Optional[bytes]:
            if not said and not challenge:
                said.append(None)
                return first
            said.append(challenge)   # an error challenge: answer it empty, the server then says NO
            return b"" if len(said) < 4 else None

        self.deadline.arm(client.socket())
        try:
            client._imap.authenticate(mechanism, respond)
        except imaplib.IMAP4.abort:
            raise
        except imaplib.IMAP4.error as exc:
            m = _COMPLETION.match(client._imap.completion)
            return sasl.refusal(server_words(m.group(1)) if m else server_words(str(exc)), said)
        client._imap.state = "AUTH"
        return None

    def _not_opened(self, words: str) -> str:
        """Why the folder did not open, with the server's folder layout when the folder is missing."""
        said = words.rstrip(". ") or "no reason given"
        found = attempt("IMAP select", self.deadline, lambda: folders.look_for(self._live(), self.folder))
        if found is None:
            return 'folder "%s": %s' % (self.folder, said)
        exists, layout, better = found
        if exists:
            return 'folder "%s" exists but does not open (server: %s)' % (self.folder, said)
        text = 'folder "%s" not found (server: %s)' % (self.folder, said)
        text += "; " + layout if layout else ""
        return text + (": try --imap-folder %s" % folders.shell_word(better) if better else "")

    def __exit__(self, *exc: object) -> None:
        self._close()

    def _close(self) -> None:
        client, self.client = self.client, None
        if client is None:
            return
        self.connection.close(client)

    def _arm(self) -> None:
        self.deadline.arm(self._live().socket())

    # -- the Junk folder -----------------------------------------------------
    def _look_for_junk(self) -> None:
        """Make self.junk the Junk folder, when one is wanted and exists (once a session).

        What the look-up found is remembered: a folder for a day (*daily*),
        "none" for NONE_RELOOK seconds (a filter may make the folder with the
        first spam it files).
        """
        if self.junk_looked:
            return
        self.junk_looked = True
        wanted = self.junk_wanted
        remembered = self.memory.get("junk")
        if not isinstance(remembered, dict):
            remembered = {}
        if wanted is JUNK_AUTO:
            name = remembered.get("folder")
            looked = remembered.get("looked")
            stale = (self.daily or "folder" not in remembered or not isinstance(looked, (int, float))
                     or (name is None and not 0 <= self.now - looked < NONE_RELOOK))
            if stale:
                try:
                    name = junk_folder.discover(self._live(), self.deadline, self._arm)
                except StepFailure as failure:
                    if not isinstance(failure.__cause__, ServerSaid):
                        raise  # the connection failed: the run cannot go on either
                    self.notes.append("no Junk folder looked into: the server refused to list folders (%s)"
                                      % failure.__cause__.words)
                    name = None
                else:
                    self.notes.append('Junk folder: "%s"' % name if name else
                                      "no Junk folder found (by the \\Junk attribute or the usual names)")
                looked = self.now
        else:
            name, looked = wanted, None
        if name is not None and _same_folder(name, self.folder):
            self.notes.append('the Junk folder "%s" is the collection folder: looked at once' % name)
            name = None
        if remembered.get("folder") != name or "folder" not in remembered:
            remembered = {"folder": name}
        remembered["looked"] = looked
        self.memory["junk"] = remembered
        self.junk = _Folder(name, junk=True) if name is not None else None

    def _junk_gone(self, words: str) -> None:
        """The Junk folder did not open: not looked into this run (auto: looked up again next run)."""
        assert self.junk is not None  # the folder that did not open
        name = self.junk.name
        self.junk = None
        self.memory["junk"] = {} if self.junk_wanted is JUNK_AUTO else {"folder": name}
        self.notes.append('Junk folder "%s" not looked into: it does not open (server: %s)'
                          % (name, words.rstrip(". ") or "no reason given"))

    def _folders(self) -> list[_Folder]:
        """The folders to read, the one to keep selected last: Junk, then the collection folder."""
        self._look_for_junk()
        return [f for f in (self.junk, self.main) if f is not None]

    def _by_folder(self, refs: Sequence[Ref]) -> list[tuple[_Folder, list[int]]]:
        """*refs* grouped by folder, the selected folder first (fewer SELECTs): [(folder, uids)]."""
        groups: list[tuple[_Folder, list[int]]] = []
        for folder in self._folders():
            uids = [r.uid for r in refs if r.junk == folder.junk]
            if uids:
                groups.append((folder, uids))
        groups.sort(key=lambda g: g[0] is not self.selected)
        return groups

    # -- work ----------------------------------------------------------------
    def find(self, key: str, before: Optional[datetime.date] = None, wanted: Sequence[str] = ()) -> list[Ref]:
        """Refs of mails not flagged \\Deleted whose Subject contains *key*,
        in the Junk folder and in the collection folder.

        Each mail is read once: the search looks only at the UIDs not
        examined before in that folder (above the highest UID examined, and
        the backlog left by earlier runs; remembered with its UIDVALIDITY),
        plus the UIDs still to be removed.  At most MAX_READ per folder and
        run: when more are found, first those whose Subject holds *key* and
        one of the probe ids *wanted* (a second search), then the newest; the
        older ones are left for the next runs (see :mod:`candidates`).
        *before* (a datetime.date): the whole folders instead, only mails
        that arrived before that day (IMAP ``BEFORE``, on INTERNALDATE),
        newest MAX_FETCH, and nothing remembered.
        """
        self._key = key
        refs: list[Ref] = []
        # the folder selected already first (a second search needs no SELECT), else Junk
        # first, so that the collection folder stays selected for what follows
        for folder in sorted(self._folders(), key=lambda f: f is not self.selected):
            if self._select(folder):
                refs += [Ref(uid, folder.junk) for uid in self._search(folder, key, before, wanted)]
        return refs

    def _search(self, folder: _Folder, key: str, before: Optional[datetime.date],
                wanted: Sequence[str]) -> list[int]:
        criteria = ["UNDELETED", "SUBJECT", key]
        if before is not None:
            with step("IMAP search", self.deadline):
                self._arm()
                return sorted(self._live().search(criteria + ["BEFORE", before]))[-MAX_FETCH:]
        memory = self._memory(folder)
        floor, backlog = memory["floor"], memory.get("backlog", [])
        where = ["UID", candidates.uid_set(floor, backlog)] if floor or backlog else []
        found = self._search_unexamined(criteria + where, floor, backlog)
        folder.searched = True
        folder.found |= found
        recheck = set(memory["recheck"])
        pool = (found | recheck) - folder.read
        if len(pool) > MAX_READ:
            hits = self._search_unexamined(["UNDELETED"] + where + candidates.wanted_criteria(key, wanted),
                                           floor, backlog) if wanted else set()
            uids = candidates.choose(pool, recheck | hits, MAX_READ)
            self.notes.append("%d probe candidates found%s; reading %d this run (%d with the id of a probe "
                              "waited for, then the newest), the older ones in the next runs"
                              % (len(pool), _in(folder), len(uids), len(hits & set(uids))))
        else:
            uids = sorted(pool)
        folder.read |= set(uids)
        return uids

    def _search_unexamined(self, criteria: list[Any], floor: int, backlog: list[list[int]]) -> set[int]:
        """UID SEARCH *criteria*: the UIDs found that were not examined before."""
        with step("IMAP search", self.deadline):
            self._arm()  # n:* always holds the last message: only the UIDs above floor count
            return {uid for uid in self._live().search(criteria) if candidates.unexamined(uid, floor, backlog)}

    def _memory(self, folder: _Folder) -> dict[str, Any]:
        """What was examined in *folder* before: {"floor", "recheck", "uidvalidity", ...}.

        The collection folder's memory is the top of ``memory`` (as it always
        was), the Junk folder's is ``memory["junk"]``, with its name.
        """
        m = self.memory["junk"] if folder.junk else self.memory
        ok = (m.get("kind") == "imap" and m.get("uidvalidity") == folder.uidvalidity
              and isinstance(m.get("floor"), int) and isinstance(m.get("recheck"), list)
              and all(isinstance(u, int) for u in m["recheck"])
              and candidates.valid_backlog(m.get("backlog", [])))
        if ok and m.get("kept") and not self.readonly:
            ok = False
            self.notes.append("probes left by --keep runs%s: searching the whole folder once to remove them"
                              % _in(folder))
        elif not ok and m.get("kind"):
            self.notes.append("folder%s changed (UIDVALIDITY) or nothing remembered: searching all of it"
                              % (' "%s"' % folder.name if folder.junk else ""))
        if not ok:
            keep = {k: m[k] for k in (("folder", "looked") if folder.junk else ("junk",)) if k in m}
            m.clear()
            m.update(keep, kind="imap", uidvalidity=folder.uidvalidity, floor=0, recheck=[])
        return m

    def settle(self, examined: Sequence[Ref], to_remove: Sequence[Ref]) -> None:
        """*examined* need not be read again; *to_remove* is looked at again until it is gone."""
        for folder in self._folders():
            if not folder.searched:
                continue
            m = self._memory(folder)
            m["floor"] = max([m["floor"]] + [r.uid for r in examined if r.junk == folder.junk] + list(folder.found))
            m["backlog"] = candidates.backlog(folder.found, folder.read, m.get("backlog", []))
            gone = sorted({r.uid for r in to_remove if r.junk == folder.junk})
            m["recheck"] = gone[-MAX_FETCH:] if not self.readonly else []
            if self.readonly and gone:
                m["kept"] = True  # the next run without --keep looks at the whole folder once

    def name(self, ref: Ref) -> str:
        return "UID %s%s" % (ref.uid, _in(self.junk) if ref.junk and self.junk else "")

    def trace(self, refs: Sequence[Ref]) -> dict[Any, bytes]:
        """The trace fields of *refs* (Received, Authentication-Results), at most TRACE_BYTES of each."""
        return {item.ref: item.headers for item in self.fetch(refs, TRACE_HEADERS, TRACE_BYTES)}

    def fetch(self, refs: Sequence[Ref], fields: Optional[Iterable[str]] = None, size: int = 8192) -> list[Fetched]:
        """Probe headers (or the header *fields* named, at most *size* bytes of them) and
        INTERNALDATE of *refs*, without setting \\Seen (MAX_FETCH per command)."""
        item_name = _header_item(fields, size) if fields else _HEADER_ITEM
        out: list[Fetched] = []
        for folder, uids in self._by_folder(refs):
            if not self._select(folder):
                continue
            data: dict[int, Any] = {}
            for start in range(0, len(uids), MAX_FETCH):
                with step("IMAP fetch", self.deadline):
                    self._arm()
                    data.update(self._live().fetch(uids[start:start + MAX_FETCH], ["INTERNALDATE", item_name]))
            for uid in uids:
                item = data.get(uid)
                if item is None:  # expunged meanwhile
                    continue
                headers = b""
                for k, v in item.items():
                    if k.upper().startswith(b"BODY[HEADER") and isinstance(v, bytes):
                        headers = v
                idate = item.get(b"INTERNALDATE")
                when = None
                if idate is not None and getattr(idate, "tzinfo", None) is not None:
                    when = idate.timestamp()
                out.append(Fetched(Ref(uid, folder.junk), headers, when, junk=folder.junk, folder=folder.name))
        return out

    def remove(self, refs: Sequence[Ref]) -> None:
        """Delete exactly *refs*: \\Deleted, then UID EXPUNGE.

        Without UIDPLUS a plain EXPUNGE would also remove other mail flagged
        \\Deleted: it is sent only for a collection folder that is the
        check's alone (*dedicated*; never in the Junk folder); else the
        probes stay flagged (never read again, as the search skips \\Deleted)
        and ``unexpunged`` counts how many wait there.
        """
        if not refs or self.readonly:
            return
        for folder, uids in self._by_folder(refs):
            if not self._select(folder):
                continue
            with step("IMAP delete", self.deadline):
                self._arm()
                self._live().add_flags(uids, [imapclient.DELETED], silent=True)
                self._arm()
                if self._live().has_capability("UIDPLUS"):
                    self._live().uid_expunge(uids)
                elif self.dedicated and not folder.junk:
                    self._live().expunge()
                    self.notes.append("server lacks UIDPLUS: %d probe(s) removed with a plain EXPUNGE "
                                      "(--dedicated-mailbox)" % len(uids))
                else:
                    left = len(self._live().search(["DELETED", "SUBJECT", self._key]))
                    self.unexpunged = (self.unexpunged or 0) + left
                    self.notes.append("server lacks UIDPLUS: %d probe(s)%s flagged \\Deleted, not expunged; "
                                      "%d wait for an EXPUNGE" % (len(uids), _in(folder), left))
            if folder.searched:
                self._memory(folder)["recheck"] = []

    # -- waiting -------------------------------------------------------------
    def wait(self, until: Deadline) -> bool:
        """Wait in the collection folder until new mail may have come (True) or *until* passes (False).

        IDLE where the server offers it (and *idle*), each IDLE ended with
        DONE after IDLE_MAX at most; else a NOOP about every POLL_EVERY
        seconds.  The caller searches after True.  Step ``IMAP wait``.
        """
        if not self._select(self.main):
            return False
        with step("IMAP wait", self.deadline):
            if self.idle and self._live().has_capability("IDLE"):
                self.watching = "IMAP IDLE"
                return self._idle(until)
            self.watching = "a NOOP and a search every %gs; %s" % (
                POLL_EVERY, "--no-idle" if not self.idle else "the server does not offer IDLE")
            return self._poll(until)

    def _poll(self, until: Deadline) -> bool:
        pause = min(POLL_EVERY, until.at - until.clock())
        if pause <= 0:
            return False
        time.sleep(pause)
        self._arm()
        self._live().noop()
        return True

    def _idle(self, until: Deadline) -> bool:
        """One IDLE: True when the server tells of new mail (EXISTS, RECENT) before *until*."""
        imap = self._live()._imap
        end = min(until.at, until.clock() + IDLE_MAX)
        self._arm()
        tag = imap._command("IDLE")
        news = False
        for _ in range(MAX_IDLE_LINES):  # untagged news may come before the "+"
            resp = imap._get_response()
            done = imap.tagged_commands.get(tag)
            if done is not None:
                imap.tagged_commands.pop(tag, None)
                raise StepFailure("IMAP wait", "IDLE refused: %s" % server_words(done[1][0] if done[1] else b""))
            if resp is None:  # the continuation: idling
                break
            news = news or _is_news(resp)
        else:
            raise StepFailure("IMAP wait", "no answer to IDLE")
        try:
            while not news and until.clock() < end:
                if not self._input(end - until.clock()):
                    continue
                self._arm()
                line = imap._get_line()
                if line.startswith(b"* BYE"):
                    raise StepFailure("IMAP wait", "server ended the session: %s" % server_words(line[5:]))
                news = _is_news(line)
        finally:
            if self.client is not None and imap.tagged_commands.get(tag) is None:
                self._arm()
                imap.send(b"DONE\r\n")
                self.client._consume_until_tagged_response(tag, "IDLE")
        return news

    def _input(self, timeout: float) -> bool:
        """Is a line from the server at hand within *timeout* seconds (already
        buffered, or arriving on the socket)?"""
        sock = self._live().socket()
        sock.setblocking(False)
        try:
            try:
                if self._live()._imap.file.peek(1):
                    return True
            except OSError:  # a TLS socket with nothing to read says so this way
                pass
            if isinstance(sock, ssl.SSLSocket) and sock.pending():
                return True
        finally:
            sock.setblocking(True)
        if timeout <= 0:
            return False
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(timeout * 1000.0))


JUNK_AUTO = True  # ImapCollector(junk=JUNK_AUTO): find the Junk folder
_NEWS = LazyPattern(rb"^\* \d+ (?:EXISTS|RECENT)\b", re.I)


def _is_news(line: bytes) -> bool:
    return bool(_NEWS.match(line))


def _same_folder(a: str, b: str) -> bool:
    return a == b or (a.upper() == "INBOX" and b.upper() == "INBOX")


def _in(folder: Optional[_Folder]) -> str:
    return ' in "%s"' % folder.name if folder is not None and folder.junk else ""
