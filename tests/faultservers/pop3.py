"""The POP3 fault server: POP3Script answers every command from a script of replies."""


class POP3Script:
    """A tiny POP3 server: greeting, CAPA (TOP UIDL USER), USER and PASS
    accepted for anyone, QUIT; ``-ERR`` for the rest.

    replies: {VERB: reply} overriding any of that ('\\n' separates lines),
    or a callable (a :class:`Flood`) called with the connection.
    ``commands`` lists the verbs received, in order.
    """

    DEFAULTS = {"CAPA": "+OK\nTOP\nUIDL\nUSER\n.", "USER": "+OK", "PASS": "+OK logged in",
                "QUIT": "+OK bye"}

    def __init__(self, replies=None, greeting="+OK fault server ready"):
        self.replies = dict(self.DEFAULTS, **(replies or {}))
        self.greeting = greeting
        self.commands = []

    def __call__(self, conn):
        conn.reply(self.greeting)
        for _ in range(100):
            verb = conn.readline().decode("utf-8", "replace").split(" ", 1)[0].strip().upper()
            self.commands.append(verb)
            reply = self.replies.get(verb, "-ERR unknown command")
            if callable(reply):
                reply(conn)
            else:
                conn.reply(reply)
            if verb == "QUIT":
                return
