"""The SMTP fault server: SMTPScript answers every command from a script of replies."""


class SMTPScript:
    """An SMTP server that answers from a script.

    replies: {verb: reply} overriding the defaults; verbs are the commands
    (EHLO, HELO, STARTTLS, AUTH, MAIL, RCPT, DATA, RSET, NOOP, QUIT) and
    "GREETING" and "DOT" (the answer to the end of the message).  A reply is
    the text to send ('\\n' between lines of a multi-line reply), a callable
    called with the connection instead (an :class:`Echo`), or one of
    CLOSE (close without answering), RESET (abort with RST), SILENT (never
    answer).  starttls: a server SSLContext; STARTTLS is then offered.
    auth: mechanisms to offer ("PLAIN LOGIN"), none by default.
    delay: seconds to wait before every reply (a slow server).
    messages: the message data received (up to the final dot).
    """

    CLOSE, RESET, SILENT = "<close>", "<reset>", "<silent>"

    DEFAULTS = {
        "GREETING": "220 fault.test ESMTP fault server",
        "HELO": "250 fault.test",
        "STARTTLS": "220 2.0.0 Ready to start TLS",
        "AUTH": "235 2.7.0 Authentication successful",
        "MAIL": "250 2.1.0 Ok",
        "RCPT": "250 2.1.5 Ok",
        "DATA": "354 End data with <CR><LF>.<CR><LF>",
        "DOT": "250 2.0.0 Ok: queued as FAULT1",
        "RSET": "250 2.0.0 Ok",
        "NOOP": "250 2.0.0 Ok",
        "QUIT": "221 2.0.0 Bye",
    }

    def __init__(self, replies=None, starttls=None, auth=None, delay=0.0):
        self.replies = dict(self.DEFAULTS, **(replies or {}))
        self.starttls = starttls
        self.auth = auth
        self.delay = delay
        self.messages = []

    def _ehlo(self, tls_active):
        ext = ["fault.test", "PIPELINING", "SIZE 10240000", "8BITMIME"]
        if self.starttls and not tls_active:
            ext.append("STARTTLS")
        if self.auth:
            ext.append("AUTH " + self.auth)
        return "\n".join(("250-" if i < len(ext) - 1 else "250 ") + e for i, e in enumerate(ext))

    def _answer(self, conn, verb, default=None):
        """Send the scripted reply for *verb*; False when the dialogue must end."""
        text = self.replies.get(verb, default)
        if callable(text):
            text(conn)
            return True
        if text == self.CLOSE:
            conn.close()
            return False
        if text == self.RESET:
            conn.reset()
            return False
        if text == self.SILENT:
            conn.hold()
            return False
        conn.reply(text, self.delay)
        return True

    def __call__(self, conn):
        if not self._answer(conn, "GREETING"):
            return
        tls_active = False
        for _ in range(100):
            line = conn.readline().decode("utf-8", "replace").strip()
            verb = line.split(" ", 1)[0].upper()
            if verb == "EHLO":
                if not self._answer(conn, "EHLO", self._ehlo(tls_active)):
                    return
            elif verb == "STARTTLS" and self.starttls and not tls_active:
                if not self._answer(conn, "STARTTLS"):
                    return
                if self.replies["STARTTLS"].startswith("220"):
                    conn.starttls(self.starttls)
                    tls_active = True
            elif verb == "DATA":
                if not self._answer(conn, "DATA"):
                    return
                if self.replies["DATA"].startswith("354"):
                    self.messages.append(conn.read_until(b"\r\n.\r\n"))
                    if not self._answer(conn, "DOT"):
                        return
            elif verb in self.replies and verb != "GREETING":
                if not self._answer(conn, verb):
                    return
                if verb == "QUIT":
                    return
            else:
                conn.reply("502 5.5.2 Error: command not recognized", self.delay)
