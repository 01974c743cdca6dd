"""The server's folder layout, in words: its personal namespace and hierarchy
separator, and the folder a user may have meant by a name that does not open.

Used after a failed SELECT (imap.py) and to find the Junk folder (junk.py);
bounded: NAMESPACE or one ``LIST "" ""``, then LISTs of one level (``%``), at
most MAX_LISTED names each.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from imapclient import IMAPClient

MAX_LISTED = 1000  # folders of one level looked at


def look_for(client: IMAPClient, folder: str) -> tuple[bool, Optional[str], Optional[str]]:
    """(exists, layout, better): is *folder* listed, the server's folder
    layout in words (or None), and a listed folder the user may have meant
    (or None).

    Bounded: NAMESPACE (or LIST "" "" for the separator), then a LIST of one
    hierarchy level (``%``) where each name the user may have meant would be.
    """
    prefix, sep = namespace(client)
    wanted = meant(folder, prefix, sep)
    listed: set[str] = set()
    for level in sorted({w.rsplit(sep, 1)[0] + sep if sep and sep in w else "" for w in wanted})[:4]:
        listed.update(name for _flags, _sep, name in client.list_folders("", level + "%")[:MAX_LISTED])
    better = next((name for w in wanted for name in sorted(listed) if name.lower() == w.lower()), None)
    return folder in listed, layout(prefix, sep), better


def namespace(client: IMAPClient) -> tuple[Optional[str], Optional[str]]:
    """(prefix, separator) of the personal namespace: prefix None when unknown
    (no NAMESPACE), separator None on a flat server."""
    if client.has_capability("NAMESPACE"):
        personal = client.namespace().personal
        if personal:
            prefix, sep = personal[0]
            return prefix, sep
    return None, separator(client)


def separator(client: IMAPClient) -> Optional[str]:
    """The hierarchy separator (LIST "" ""), or None on a flat server."""
    for _flags, sep, _name in client.list_folders("", ""):
        if sep:
            return sep.decode("utf-8", "replace") if isinstance(sep, bytes) else sep
    return None


def meant(folder: str, prefix: Optional[str], sep: Optional[str]) -> list[str]:
    """Names the user may have meant by *folder*: as typed, with the server's
    separator instead of the other usual one, inside the personal namespace
    (guessed as "INBOX<separator>" when the server does not say)."""
    wanted = [folder]
    other = {"/": ".", ".": "/"}.get(sep or "")
    if other and sep and other in folder and sep not in folder:
        wanted.append(folder.replace(other, sep))
    if prefix is None and sep:
        prefix = "INBOX" + sep
    if prefix and folder.upper() != "INBOX":
        wanted += [prefix + w for w in wanted if not w.upper().startswith(prefix.upper())]
    return wanted


def layout(prefix: Optional[str], sep: Optional[str]) -> Optional[str]:
    if sep is None:
        return "the server's folders have no hierarchy" if prefix is not None else None
    if prefix is None:
        return 'the server\'s hierarchy separator is "%s"' % sep
    if not prefix:
        return 'the server\'s folders have no prefix, separator "%s"' % sep
    return 'the server\'s personal namespace is "%s" with separator "%s"' % (prefix, sep)


def shell_word(text: str) -> str:
    """*text* as one shell word, quoted only where the shell needs it."""
    if re.fullmatch(r"[\w@%+=:,./-]+", text):
        return text
    import shlex  # only a message with a folder name the shell must see quoted needs it

    return shlex.quote(text)
