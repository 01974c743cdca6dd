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

A collector is used as a context manager and offers ``find(key)``,
``fetch(refs)`` and ``remove(refs)``; other collectors (POP3) follow the
same shape.
"""

import socket
import ssl
from dataclasses import dataclass

import imapclient
from imapclient import imap4, tls

from . import probe as probe_format
from .failure import StepFailure, describe, step
from .net import lookup

DEFAULT_PORTS = {"tls": 993, "starttls": 143, "none": 143}
LOGOUT_SECONDS = 1.0  # a polite goodbye may take this long, then the connection is dropped
# At most this many hits are read per run (the newest); more means the
# mailbox is flooded with probes and the rest waits for the next runs.
MAX_FETCH = 200
# Only the probe headers, and at most their first 8 KiB (a hostile mail with a
# huge subject costs no more than a real probe).
_HEADER_ITEM = "BODY.PEEK[HEADER.FIELDS (%s)]<0.8192>" % " ".join(
    h.upper() for h in probe_format.FETCH_HEADERS)


class _Client(imapclient.IMAPClient):
    """IMAPClient that connects to an address looked up in advance (within the
    step's deadline); TLS and STARTTLS still check the certificate against the
    host name."""

    def __init__(self, host, address, **kwargs):
        self._address = address
        super().__init__(host, **kwargs)

    def _create_IMAP4(self):
        timeout = getattr(self._timeout, "connect", None)
        if self.ssl:
            return _TLSByAddress.bound(self._address)(self.host, self.port, self.ssl_context, timeout)
        return _PlainByAddress.bound(self._address)(self.host, self.port, timeout)


class _ByAddress:
    address = None

    @classmethod
    def bound(cls, address):
        return type(cls.__name__, (cls,), {"address": address})

    def _open_tcp(self, timeout):
        return socket.create_connection((self.address, self.port), timeout if timeout is not None else self._timeout)


class _TLSByAddress(_ByAddress, tls.IMAP4_TLS):
    def _create_socket(self, timeout=None):
        return tls.wrap_socket(self._open_tcp(timeout), self.ssl_context, self.host)


class _PlainByAddress(_ByAddress, imap4.IMAP4WithTimeout):
    def _create_socket(self, timeout=None):
        return self._open_tcp(timeout)


@dataclass
class Fetched:
    """One candidate mail: its reference, raw probe headers (at most 8 KiB), arrival time."""

    ref: int                    # UID
    headers: bytes
    internaldate: float         # epoch seconds, or None


class ImapCollector:
    """A session with one IMAP folder."""

    def __init__(self, endpoint, folder, deadline, readonly=False):
        self.ep = endpoint
        self.folder = folder
        self.deadline = deadline
        self.readonly = readonly
        self.client = None
        self.notes = []

    # -- session -------------------------------------------------------------
    def __enter__(self):
        ep, deadline = self.ep, self.deadline
        with step("IMAP connect", deadline):
            address = lookup(ep.host, ep.port, deadline)
            try:
                self.client = _Client(
                    ep.host, address, port=ep.port, ssl=(ep.tls == "tls"),
                    ssl_context=ep.ssl_context, timeout=deadline.left(),
                )
            except ssl.SSLError as exc:
                raise StepFailure("IMAP TLS", describe(exc)) from exc
            self.client.normalise_times = False
        try:
            if ep.tls == "starttls":
                with step("IMAP TLS", self.deadline):
                    self._arm()
                    if not self.client.has_capability("STARTTLS"):
                        raise StepFailure("IMAP TLS", "server does not offer STARTTLS")
                    self.client.starttls(ep.ssl_context)
            with step("IMAP login", self.deadline):
                self._arm()
                user, password = ep.user or "", ep.password or ""
                if (user + password).isascii():
                    self.client.login(user, password)
                else:
                    self.client.plain_login(user, password)
                # keep the capabilities the server sent with its login answer (no extra round trip)
                self.client.capabilities()
            with step("IMAP select", self.deadline):
                self._arm()
                self.client.select_folder(self.folder, readonly=self.readonly)
        except BaseException:
            self._close()
            raise
        return self

    def __exit__(self, *exc):
        self._close()

    def _close(self):
        client, self.client = self.client, None
        if client is None:
            return
        try:
            with step("IMAP logout", self.deadline.within(LOGOUT_SECONDS)):
                client.logout()
        except StepFailure:
            try:
                client.shutdown()
            except OSError:
                pass

    def _arm(self):
        self.deadline.arm(self.client.socket())

    # -- work ----------------------------------------------------------------
    def find(self, key, before=None):
        """UIDs of mails whose Subject contains *key* (newest MAX_FETCH).

        *before* (a datetime.date) keeps only mails that arrived before that
        day (IMAP ``BEFORE``, on INTERNALDATE).
        """
        criteria = ["SUBJECT", key]
        if before is not None:
            criteria += ["BEFORE", before]
        with step("IMAP search", self.deadline):
            self._arm()
            uids = sorted(self.client.search(criteria))
        if len(uids) > MAX_FETCH:
            self.notes.append("%d probe candidates found; reading the newest %d this run" % (len(uids), MAX_FETCH))
            uids = uids[-MAX_FETCH:]
        return uids

    def fetch(self, uids):
        """Probe headers and INTERNALDATE of *uids*, without setting \\Seen."""
        if not uids:
            return []
        with step("IMAP fetch", self.deadline):
            self._arm()
            data = self.client.fetch(uids, ["INTERNALDATE", _HEADER_ITEM])
        out = []
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
            out.append(Fetched(uid, headers, when))
        return out

    def remove(self, uids):
        """Delete exactly *uids*: \\Deleted, then UID EXPUNGE when possible."""
        if not uids or self.readonly:
            return
        with step("IMAP delete", self.deadline):
            self._arm()
            self.client.add_flags(uids, [imapclient.DELETED], silent=True)
            if self.client.has_capability("UIDPLUS"):
                self._arm()
                self.client.uid_expunge(uids)
            else:
                self.notes.append(
                    "server lacks UIDPLUS: %d probe(s) flagged \\Deleted, not expunged" % len(uids)
                )


def open_collector(endpoint, folder, deadline, readonly=False):
    """The collector for *endpoint* (IMAP today; POP3 slots in here)."""
    if endpoint.protocol == "IMAP":
        return ImapCollector(endpoint, folder, deadline, readonly)
    raise ValueError("no collector for protocol %s" % endpoint.protocol)

