"""Hostile answers, more than any client should take: Flood sends endless data (a handler or a
reply of a script), lines makes its chunks."""

import time

FLOOD_TOTAL = 320 * 1024 * 1024   # bytes one Flood sends at most
FLOOD_SECONDS = 20.0              # and for this long at most


class Flood:
    """Send *head*, then chunks as fast as the client takes them, until
    FLOOD_TOTAL bytes or FLOOD_SECONDS have gone; then say nothing more and
    hold the connection open.  A handler (``FaultServer(Flood(...))``) or a
    reply of :class:`IMAPScript` or :class:`POP3Script` ("{tag}" in *head*
    stands for the command's tag).

    *chunk*: bytes sent over and over, or chunk(n) giving the n-th chunk.
    ``sent`` counts the bytes sent after the head.
    """

    def __init__(self, head, chunk, total=FLOOD_TOTAL, seconds=FLOOD_SECONDS):
        self.head = head
        self.chunk = chunk
        self.total = total
        self.seconds = seconds
        self.sent = 0

    def __call__(self, conn, tag=""):
        conn.send(self.head.replace(b"{tag}", tag.encode("ascii")))
        end = time.monotonic() + self.seconds
        for n in range(1 << 30):
            if self.sent >= self.total or time.monotonic() > end:
                break
            data = self.chunk(n) if callable(self.chunk) else self.chunk
            conn.send(data)
            self.sent += len(data)
        conn.hold()


def lines(line, size=1024 * 1024):
    """About *size* bytes of *line* (CRLF-terminated) over and over: a Flood chunk."""
    line = line.rstrip(b"\r\n") + b"\r\n"
    return line * max(1, size // len(line))
