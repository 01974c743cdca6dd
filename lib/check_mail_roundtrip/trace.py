"""Protocol trace for ``-vvv``: secrets never reach the output."""

import base64
import re

_AUTH_LINE = re.compile(r"(?i)\b(AUTH\s+\S+|LOGIN|AUTHENTICATE\s+\S+|PASS)\s+\S.*")


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

    def redact(text):
        for n in needles:
            text = text.replace(n, "****")
        text = _AUTH_LINE.sub(lambda m: m.group(1) + " ****", text)
        # AUTH PLAIN / LOGIN continuation lines: long base64 strings
        return re.sub(r"[A-Za-z0-9+/]{16,}={0,2}", "****", text) if "334" in text or "AUTH" in text.upper() else text

    return redact
