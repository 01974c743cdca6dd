"""Collecting by Microsoft Graph: find, read and remove this profile's returned probes.

One request lists the probe candidates of a folder
(``GET /users/{u}/mailFolders/{folder}/messages``), filtered by Exchange:
received since the oldest probe in flight or the last look, whichever is
earlier, less MARGIN (clocks differ, and a mail becomes visible a little
after it arrived), and a subject that starts with the profile's probe
subject; only the fields needed (id, subject, receivedDateTime,
internetMessageHeaders), the newest first (``$orderby`` on the property
``$filter`` names first, as Exchange wants), at most PAGES pages of PAGE
messages (``@odata.nextLink`` followed as given).  What a run costs does not
grow with the mailbox: other mail never crosses the wire.

Nothing is read, moved or marked but the probes: listing sets no flag (no
``isRead`` change), and only this profile's verified probes are removed, each
by ``POST /users/{u}/messages/{id}/permanentDelete`` (a plain ``DELETE``
would move it to Deleted Items, where probes would pile up).  With
``readonly`` (--keep) nothing is removed; the probes left are looked at
again by later runs (see ``recheck`` in the memory) until a run without
--keep removes them.

The Junk folder is the well-known ``junkemail`` (or the folder --junk-folder
names: a well-known name or a folder id); one that is not there is a note,
not a failure.  ``receivedDateTime`` is the arrival time.  The trace fields a
run asks for (``trace``: Received, Authentication-Results) come from the
internetMessageHeaders listed already: no request of their own.  ``wait`` polls:
about once a second, another listing.

``memory`` (kept in the state file): {"kind": "graph", "mailbox": a hash of
the mailbox and the Graph host, "looked": {folder: when it was last listed},
"recheck": the arrival of the oldest probe to be removed that may still be
there}.  Nothing remembered (a first run, another mailbox): the whole folder
is listed once.

Steps, as named in the status line: ``Graph connect``, ``Graph TLS``,
``Graph list``, ``Graph delete`` (and ``OAuth2 token``).
"""

from __future__ import annotations

import base64
import calendar
import datetime
import hashlib
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, Optional

from . import probe as probe_format
from .budget import Deadline
from .failure import StepFailure
from .graph_http import USER_MISSING, Graph, Missing, Refused, query_text, user_path
from .mail import TRACE_BYTES, TRACE_HEADERS, CollectorFactory, Fetched
from .settings import Endpoint

MARGIN = 600.0          # seconds before the oldest probe in flight (or the last look) still listed
PAGE = 50               # messages per page ($top)
PAGES = 20              # pages of one folder read per listing at most (the rest: the next runs)
MAX_HEADER = 64 * 1024  # bytes of one message's probe headers kept
POLL_EVERY = 1.0        # seconds between listings while waiting for a probe (--wait)
DELETE_RESERVE = 1.0    # seconds kept back: no new permanentDelete after that (the rest: the next run)
JUNK = "junkemail"      # the well-known name of the Junk Email folder
EVER = "1900-01-01T00:00:00Z"  # "since ever" for a filter that must name receivedDateTime first
SELECT = "id,subject,receivedDateTime,internetMessageHeaders"
_WHEN = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.\d+)?(Z|[+-]\d\d:\d\d)?$")


class Ref(NamedTuple):
    """A message the collector listed: its Graph id, whether it is in the Junk folder, its arrival."""

    id: str
    junk: bool = False
    received: Optional[float] = None


def iso(when: float) -> str:
    """Epoch seconds as Graph's filters write a time: ``2024-05-01T12:00:00Z`` (UTC, whole seconds)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(max(0.0, when)))


def received_at(text: object) -> Optional[float]:
    """Epoch seconds of a receivedDateTime (``2024-05-01T12:00:00Z``), or None when it is no such time."""
    m = _WHEN.match(text) if isinstance(text, str) else None
    if not m:
        return None
    try:
        stamp = calendar.timegm(tuple(int(g) for g in m.groups()[:6]) + (0, 0, 0))
    except (ValueError, OverflowError):
        return None
    zone = m.group(7)
    if zone and zone != "Z":
        sign = -1 if zone[0] == "+" else 1
        stamp += sign * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60)
    return float(stamp)


def odata_string(text: str) -> str:
    """*text* as an OData string literal: in single quotes, a quote doubled."""
    return "'%s'" % text.replace("'", "''")


def header_block(item: Mapping[str, Any], names: Sequence[str] = probe_format.FETCH_HEADERS) -> bytes:
    """The probe headers of a listed message (or those *names*), as a header block (at most
    MAX_HEADER bytes): those of its internetMessageHeaders that :mod:`probe` reads, else its subject."""
    wanted = {name.lower() for name in names}
    lines = []
    headers = item.get("internetMessageHeaders")
    for header in headers if isinstance(headers, list) else ():
        if isinstance(header, dict) and isinstance(header.get("name"), str) and \
                header["name"].lower() in wanted and isinstance(header.get("value"), str):
            lines.append("%s: %s" % (header["name"], header["value"]))
    if "subject" in wanted and not any(line.lower().startswith("subject:") for line in lines) and \
            isinstance(item.get("subject"), str):
        lines.append("Subject: %s" % item["subject"])
    return "".join(line + "\r\n" for line in lines).encode("utf-8", "replace")[:MAX_HEADER]


def _mark(text: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(text.encode("utf-8")).digest()[:6]).decode("ascii")


class GraphCollector:
    """A session with one mailbox's folder (and its Junk folder) through *graph* (see the module doc).

    *junk*: None (not looked into), True (``junkemail``) or a folder's well-known name or id;
    *since*: when the oldest probe in flight was sent (epoch seconds, None: none is);
    *now*: the run's clock.
    """

    def __init__(self, graph: Graph, endpoint: Endpoint, folder: str, deadline: Deadline, readonly: bool = False,
                 memory: Optional[dict[str, Any]] = None, junk: object = None, since: Optional[float] = None,
                 now: Optional[float] = None) -> None:
        self.graph = graph
        self.user = endpoint.user or ""
        self.folder = folder
        self.deadline = deadline
        self.readonly = readonly
        self.memory = memory if memory is not None else {}
        self.notes: list[str] = []
        self.junk_folder: Optional[str] = None
        if junk is not None:
            name = JUNK if junk is True else str(junk)
            if name.lower() == folder.lower():
                self.notes.append('the Junk folder "%s" is the collection folder: looked at once' % name)
            else:
                self.junk_folder = name
        self.since = since
        self.now = time.time() if now is None else now
        self.unexpunged: Optional[int] = None  # IMAP only
        self.watching: Optional[str] = None
        self.listed: dict[Ref, Fetched] = {}
        self.messages: dict[Ref, Mapping[str, Any]] = {}  # what the listing said of each (for trace)
        self.looked: dict[str, float] = {}  # folders listed in this session, and when
        self.unremoved: set[Ref] = set()  # probes to remove that are not removed yet
        self._mailbox = _mark("%s\0%s" % (self.user.lower(), endpoint.host.lower()))

    def __enter__(self) -> GraphCollector:
        return self

    def __exit__(self, *exc: object) -> None:
        """Nothing to end: the connection is the run's (graph_http.Graph), kept for the other leg."""

    # -- what was examined before ------------------------------------------------------------------
    def _memory(self) -> dict[str, Any]:
        m = self.memory
        ok = (m.get("kind") == "graph" and m.get("mailbox") == self._mailbox and isinstance(m.get("looked"), dict)
              and all(isinstance(v, (int, float)) for v in m["looked"].values())
              and (m.get("recheck") is None or isinstance(m.get("recheck"), (int, float))))
        if not ok:
            if m:
                self.notes.append("another mailbox, or nothing remembered of it: listing the whole folder once")
            m.clear()
            m.update(kind="graph", mailbox=self._mailbox, looked={}, recheck=None)
        return m

    def _since(self, folder: str) -> Optional[float]:
        """From when *folder* is listed (epoch seconds, MARGIN taken off), or None: the whole folder."""
        m = self._memory()
        looked = m["looked"].get(folder)
        if looked is None:
            return None
        times = [t for t in (looked, self.since, m["recheck"]) if t is not None]
        return min(times) - MARGIN

    # -- work ------------------------------------------------------------------------------------------
    def find(self, key: str, before: Optional[datetime.date] = None, wanted: Sequence[str] = ()) -> list[Ref]:
        """Refs of the messages whose subject starts with the probe subject for *key*, in the Junk
        folder and the collection folder, received since the oldest probe in flight or the last
        look (less MARGIN); *before* (a date): instead those received before that day (UTC).
        *wanted* is not needed: Exchange filters."""
        refs: list[Ref] = []
        for folder, junk in ((self.junk_folder, True), (self.folder, False)):
            if folder is None:
                continue
            if before is not None:
                day = calendar.timegm(before.timetuple())
                condition = "receivedDateTime lt %s" % iso(day)
            else:
                since = self._since(folder)
                condition = "receivedDateTime ge %s" % (iso(since) if since is not None else EVER)
            items = self._list(folder, junk, condition, probe_format.SUBJECT + key)
            if items is None:
                continue
            if before is None:
                self.looked[folder] = self.now
            for ref, fetched in items:
                self.listed[ref] = fetched
                refs.append(ref)
        return refs

    def _list(self, folder: str, junk: bool, condition: str, prefix: str) -> Optional[list[tuple[Ref, Fetched]]]:
        """The messages of *folder* that meet *condition* and whose subject starts with *prefix*,
        newest first, PAGES pages at most; None when the Junk folder is not there (a note)."""
        query = {"$filter": "%s and startswith(subject,%s)" % (condition, odata_string(prefix)),
                 "$orderby": "receivedDateTime desc", "$select": SELECT, "$top": str(PAGE)}
        target: Optional[str] = user_path(self.user, "mailFolders", folder, "messages") + "?" + query_text(query)
        found: list[tuple[Ref, Fetched]] = []
        for _ in range(PAGES):
            if target is None:
                break
            try:
                answer = self.graph.call("Graph list", self.deadline, "GET", target,
                                         missing=Missing(self.user, folder))
            except Refused as refused:
                if junk and refused.status == 404 and refused.code not in USER_MISSING:
                    self.notes.append('Junk folder "%s" not looked into: Graph does not find it (%s)'
                                      % (folder, refused.words))
                    self.junk_folder = None  # not asked again in this session
                    return None
                raise
            page = answer.data.get("value")
            if not isinstance(page, list):
                raise StepFailure("Graph list", "Graph's answer holds no list of messages (no \"value\")")
            for item in page:
                if isinstance(item, dict) and isinstance(item.get("id"), str) and item["id"]:
                    when = received_at(item.get("receivedDateTime"))
                    ref = Ref(item["id"], junk, when)
                    self.messages[ref] = item
                    found.append((ref, Fetched(ref, header_block(item), when, "receivedDateTime", junk=junk,
                                               folder=folder)))
            link = answer.data.get("@odata.nextLink")
            target = link if isinstance(link, str) and link else None
        else:
            if target is not None:
                self.notes.append('more than %d probe candidates in "%s": the newest read this run, the older '
                                  "ones once these are removed" % (PAGE * PAGES, folder))
        return found

    def fetch(self, refs: Sequence[Ref]) -> list[Fetched]:
        """What the listing brought of *refs* (headers and arrival): no request of its own."""
        return [self.listed[r] for r in refs if r in self.listed]

    def trace(self, refs: Sequence[Ref]) -> dict[Ref, bytes]:
        """The trace fields of *refs* from their internetMessageHeaders, listed already: no request."""
        return {r: header_block(self.messages[r], TRACE_HEADERS)[:TRACE_BYTES] for r in refs if r in self.messages}

    def settle(self, examined: Sequence[Ref], to_remove: Sequence[Ref]) -> None:
        """The folders listed are looked at from now on; the probes *to_remove* are listed
        again (from their arrival on) until they are gone."""
        if not self.looked:
            return
        m = self._memory()
        m["looked"].update(self.looked)
        self.unremoved = set(to_remove)
        arrivals = [r.received for r in to_remove if r.received is not None]
        m["recheck"] = min(arrivals) if arrivals else None

    def remove(self, refs: Sequence[Ref]) -> None:
        """permanentDelete exactly *refs* (nothing with ``readonly``); one already gone is no failure.
        Those left when time runs short are removed by the next run."""
        if not refs or self.readonly:
            return
        done = 0
        for ref in refs:
            if self.deadline.at - self.deadline.clock() < DELETE_RESERVE:
                self.notes.append("%d probe(s) left for the next run to remove (time)" % (len(refs) - done))
                return
            try:
                self.graph.call("Graph delete", self.deadline, "POST",
                                user_path(self.user, "messages", ref.id, "permanentDelete"))
            except Refused as refused:
                if refused.status != 404:
                    raise
                self.notes.append("%s was gone already (%s)" % (self.name(ref), refused.words))
            done += 1
            self.unremoved.discard(ref)
        if self.looked and not self.unremoved:
            self._memory()["recheck"] = None

    def name(self, ref: Ref) -> str:
        return "id %s%s" % (ref.id, ' in "%s"' % self.junk_folder if ref.junk else "")

    def wait(self, until: Deadline) -> bool:
        """Pause about POLL_EVERY seconds (True: the caller lists again), unless *until* passes first (False)."""
        pause = min(POLL_EVERY, until.at - until.clock())
        if pause <= 0:
            return False
        self.watching = "a Graph listing every %gs" % POLL_EVERY
        time.sleep(pause)
        return True


def collector_factory(graph: Graph) -> CollectorFactory:
    """The CollectorFactory of a run that collects by Graph through its client *graph*."""

    def open_collector(endpoint: Endpoint, folder: str, deadline: Deadline, readonly: bool = False,
                       memory: Optional[dict] = None, dedicated: bool = False, junk: object = None,
                       daily: bool = False, idle: bool = True, now: Optional[float] = None,
                       since: Optional[float] = None) -> GraphCollector:
        return GraphCollector(graph, endpoint, folder, deadline, readonly, memory, junk, since, now)

    return open_collector
