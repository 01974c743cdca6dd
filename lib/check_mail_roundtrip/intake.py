"""Bounds on what a server may make the check read and hold.

A hostile or broken server may announce an IMAP literal of 4 GiB, send
untagged responses without end, or list a POP3 maildrop that never ends.
An :class:`Intake` counts what one IMAP connection (or one POP3 listing)
has brought, in bytes (in all, and since the last command) and in lines,
and raises :class:`Flooded` as soon as a bound is passed: a literal is
refused when its size is announced, before any of it is read.  Once
flooded, an Intake refuses every later read too, so the goodbye that
follows does not read the flood either.  The transports' steps turn
Flooded into the failed step's status line ("IMAP fetch failed: server
sent a 4294967295-byte literal (limit 1 MiB)").
"""

from __future__ import annotations

from typing import Optional

MIB = 1 << 20


class Flooded(Exception):
    """A server sent more than the check takes; the text says what, and the limit.

    Not an imaplib error: imaplib would wrap it in "command: X => ...".
    """


def mib(size: int) -> str:
    """*size* bytes in MiB, for a status line: "1 MiB", "40 MiB", "0.5 MiB"."""
    return "%g MiB" % (size / MIB)


class Intake:
    """What one connection (or one answer) has received, against its bounds.

    *words* tell the failure, "%s" standing for the bound passed; *scope*
    follows the bound in all ("more than " + "40 MiB" + " in one session").
    Bounds of 0 are none: *max_lines* in all, *max_answer* bytes since
    :meth:`next_answer` (IMAP: since the last command), *max_literal* the
    largest literal taken (IMAP).
    """

    def __init__(self, words: str, max_bytes: int, max_lines: int = 0, max_answer: int = 0, max_literal: int = 0,
                 scope: str = "") -> None:
        self.words = words
        self.scope = scope
        self.max_bytes = max_bytes
        self.max_lines = max_lines
        self.max_answer = max_answer
        self.max_literal = max_literal
        self.bytes = 0
        self.lines = 0
        self.answer = 0      # bytes since next_answer()
        self.refused: Optional[str] = None  # the words of the Flooded raised, raised again on every later read

    def next_answer(self) -> None:
        """A command went out: what comes now is its answer."""
        self.answer = 0

    def before(self, size: int = 0) -> None:
        """Before reading: a line (*size* 0), or a literal of *size* bytes announced."""
        if self.refused is not None:
            raise Flooded(self.refused)
        if self.max_literal and size > self.max_literal:
            self._refuse("server sent a %d-byte literal (limit %s)" % (size, mib(self.max_literal)))
        self._bound(self.bytes + size, self.answer + size, self.lines)

    def took(self, data: bytes, lines: int = 1) -> None:
        """*data* was read: *lines* lines (0 for a literal, or for a piece of a line)."""
        self.bytes += len(data)
        self.answer += len(data)
        self.lines += lines
        self._bound(self.bytes, self.answer, self.lines)

    def _bound(self, size: int, answer: int, lines: int) -> None:
        if size > self.max_bytes:
            self._refuse(self.words % (mib(self.max_bytes) + self.scope))
        if self.max_answer and answer > self.max_answer:
            self._refuse(self.words % (mib(self.max_answer) + " in one answer"))
        if self.max_lines and lines > self.max_lines:
            self._refuse(self.words % ("%d lines%s" % (self.max_lines, self.scope)))

    def _refuse(self, words: str) -> None:
        self.refused = words
        raise Flooded(words)
