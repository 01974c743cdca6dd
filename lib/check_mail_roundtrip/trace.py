"""Protocol trace for ``-vvv``: secrets never reach the output."""

import base64
import logging
import re

_AUTH_LINE = re.compile(r"(?i)\b(AUTH\s+\S+|LOGIN|AUTHENTICATE\s+\S+|PASS)\s+[^'\s][^']*")


def redactor(secrets):
    """A function that removes *secrets* (and their base64 forms) from a text."""
    needles = set()
    for s in secrets:
        if not s:
            continue
        needles.add(s)
        raw = s.encode("utf-8")
        needles.add(base64.b64encode(raw).decode("ascii"))
    needles = sorted(needles, key=len, reverse=True)
    in_auth = [False]  # the server's last reply was a 334 challenge

    def redact(text):
        for n in needles:
            text = text.replace(n, "****")
        if text.lstrip().lower().startswith("send:"):  # what the client says
            text = _AUTH_LINE.sub(lambda m: m.group(1) + " ****", text)
            if in_auth[0]:  # continuation of an AUTH dialogue
                text = re.sub(r"'[A-Za-z0-9+/=]{4,}\\r\\n'", r"'****\\r\\n'", text)
        elif text.lstrip().lower().startswith("reply:"):
            in_auth[0] = bool(re.search(r"reply: b?'334[ -]", text))
        return text

    return redact



def enable(handler):
    """Send the protocol trace (``-vvv``) to *handler*."""
    ours = logging.getLogger("check_mail_roundtrip")
    ours.setLevel(logging.DEBUG)
    ours.addHandler(handler)
    logging.getLogger("imapclient").setLevel(logging.DEBUG)
    logging.getLogger("imapclient").addHandler(handler)
