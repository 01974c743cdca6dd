"""Where a server files spam: finding the Junk folder of an IMAP account.

A probe a filter files as spam has arrived, just not where it should: the
collector also looks into the Junk folder (see imap.py).  Which folder that
is, in this order:

1. the folder whose LIST attributes include ``\\Junk`` (RFC 6154 SPECIAL-USE;
   where the server advertises SPECIAL-USE, asked for with
   ``LIST (SPECIAL-USE) "" "*"``, which lists those folders only);
2. else the first of the usual names (:data:`NAMES`), at the top level, then
   under ``INBOX`` and ``[Gmail]``, compared without regard to case.

The look-up costs a few LIST commands; the collector remembers its answer
(also "none") and looks again once a day.  :func:`pick` is the pure part.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

from .failure import step
from .folders import MAX_LISTED, separator

if TYPE_CHECKING:
    from imapclient import IMAPClient

    from .budget import Deadline

# A folder as LIST gives it: (its flags, its name)
Listed = tuple[Sequence[Union[bytes, str]], str]

# The usual names of a Junk folder, best first (Dovecot, Thunderbird,
# Exchange/Outlook, Gmail's "[Gmail]/Spam" comes from the "[Gmail]" level).
NAMES = ("Junk", "Spam", "Junk E-mail", "Junk Email")
GMAIL = "[Gmail]"
JUNK_FLAG = b"\\Junk"


def candidates(sep: Optional[str]) -> list[str]:
    """The usual Junk folder names, in order of preference, for separator *sep*."""
    names = list(NAMES)
    if sep:
        names.append(GMAIL + sep + "Spam")
        names += ["INBOX" + sep + n for n in NAMES]
    return names


def pick(listing: Sequence[Listed], sep: Optional[str]) -> Optional[str]:
    """The Junk folder among *listing* ((flags, name) pairs), or None.

    A folder flagged ``\\Junk`` wins; else the first usual name present.
    """
    for flags, name in listing:
        if any(_flag(f) == JUNK_FLAG.lower() for f in flags):
            return name
    by_lower: dict[str, str] = {}
    for _flags, name in listing:
        by_lower.setdefault(name.lower(), name)
    for wanted in candidates(sep):
        if wanted in (name for _f, name in listing):
            return wanted
        if wanted.lower() in by_lower:
            return by_lower[wanted.lower()]
    return None


def _flag(f: Union[bytes, str]) -> bytes:
    return (f if isinstance(f, bytes) else str(f).encode("ascii", "replace")).lower()


def discover(client: IMAPClient, deadline: Deadline, arm: Callable[[], None]) -> Optional[str]:
    """The name of *client*'s Junk folder (an imapclient.IMAPClient logged in), or None.

    Step ``IMAP list``; *arm* gives the socket the time left before each command.
    """
    with step("IMAP list", deadline):
        if client.has_capability("SPECIAL-USE"):
            arm()
            found = pick(_special_use(client), None)
            if found:
                return found
        arm()
        listed = [(f, n) for f, _s, n in client.list_folders("", "%")[:MAX_LISTED]]
        sep = separator(client)
        if sep:
            top = {n.lower(): n for _f, n in listed}
            for parent in ("INBOX", GMAIL):
                if parent.lower() in top:
                    arm()
                    listed += [(f, n) for f, _s, n in
                               client.list_folders("", top[parent.lower()] + sep + "%")[:MAX_LISTED]]
        return pick(listed, sep)


def _special_use(client: IMAPClient) -> list[tuple[Any, str]]:
    """(flags, name) of the folders with a special use: LIST (SPECIAL-USE) "" "*".

    A server that advertises SPECIAL-USE but refuses the selection option
    (no LIST-EXTENDED) gives an empty answer: the names are looked at then.
    """
    imap = client._imap
    try:
        typ, dat = imap._simple_command("LIST", "(SPECIAL-USE)", '""', '"*"')
    except imap.abort:
        raise
    except imap.error:  # BAD
        return []
    if typ != "OK":
        return []
    typ, dat = imap._untagged_response(typ, dat, "LIST")
    return [(f, n) for f, _s, n in client._proc_folder_list(dat)]
