"""Handlers and replies that speak no protocol of their own: silence, a greeting then a reset or
a close, a plain-text greeting where TLS is expected, a slow drip, an echo of the client's line."""


def tarpit(conn):
    """Accept and never say a word."""
    conn.hold()


def greet_then_reset(greeting):
    """Send *greeting*, read the first command, then abort with a RST."""
    def handler(conn):
        conn.reply(greeting)
        conn.readline()
        conn.reset()
    return handler


def greet_then_close(greeting):
    """Send *greeting*, read the first command, then close (FIN) without a reply."""
    def handler(conn):
        conn.reply(greeting)
        conn.readline()
        conn.close()
    return handler


def plain_greeting(greeting):
    """A plain-text server: greet at once (where the client expects a TLS handshake)."""
    def handler(conn):
        conn.reply(greeting)
        conn.drain()
    return handler


def drip(prefix, interval=0.3, filler=b"x"):
    """Send *prefix*, then one byte of *filler* every *interval* seconds and never
    a line end (a slowloris): every read succeeds, the line never completes."""
    def handler(conn):
        conn.send(prefix)
        for _ in range(100000):
            conn.sleep(interval)
            conn.send(filler)
    return handler


class Echo:
    """A reply that repeats what the client said: a server that echoes a login in its refusal.

    *template* with "{line}" for the command line just read, "{tag}" for its
    IMAP tag, and "{data}" for the line the client answers to a "+ "
    continuation sent first (the response of an IMAP AUTHENTICATE).  A reply
    of :class:`SMTPScript`, :class:`IMAPScript` or :class:`POP3Script`.
    """

    def __init__(self, template):
        self.template = template

    def __call__(self, conn, tag=""):
        text = self.template.replace("{tag}", tag).replace("{line}", conn.line)
        if "{data}" in text:
            conn.reply("+ ")
            conn.readline()
            text = text.replace("{data}", conn.line)
        conn.reply(text)
