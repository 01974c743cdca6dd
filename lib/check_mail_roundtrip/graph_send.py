"""Sending by Microsoft Graph: the probe handed to Exchange Online with ``POST /users/{u}/sendMail``.

Graph takes a message in two forms (user-sendmail, v1.0).  As MIME (a
base64 ``text/plain`` body) it would be the probe byte for byte, but the
documentation says Exchange then always saves a copy in Sent Items: a MIME
body cannot say ``saveToSentItems``.  As JSON it can: ``"saveToSentItems":
false`` is documented to keep no copy, so probes pile up nowhere, and nothing
needs to be looked for and deleted afterwards (a copy would cost two more
requests a run, and time until it appears).  The JSON form is chosen: the
probe's subject and text body go as they are, and its ``X-`` headers (the
token in ``X-Mail-Roundtrip``, the signed return address) as
``internetMessageHeaders``, which Graph takes only with ``x-`` names and at
most five.  Exchange writes From, Date and Message-ID itself.  The token in
the Subject and in ``X-Mail-Roundtrip`` is what every collector verifies, so
a probe sent by Graph verifies when IMAP or POP3 collects it, and a probe
sent by SMTP when Graph does.

202 Accepted means Exchange took the message (delivery follows); any error
answer is a refusal; no answer after the request went out leaves the
outcome uncertain (the probe may still arrive).  Step ``Graph send``.
"""

from __future__ import annotations

import email
import email.message
import json
from typing import Any, Optional

from .budget import Deadline
from .failure import StepFailure
from .graph_http import Graph, Missing, Unclear, user_path
from .mail import FAILED, SENT, UNCERTAIN, SendResult
from .probe import decode_header_value
from .settings import Endpoint

STEP = "Graph send"
MAX_X_HEADERS = 5  # internetMessageHeaders Graph takes in one message


def sendmail_body(message: str, mail_from: str, rcpt_to: str, user: str) -> dict[str, Any]:
    """The sendMail request for the probe *message* (RFC 5322 text): subject, text body,
    recipient, the X- headers, no copy in Sent Items; ``from`` only when it is not *user*."""
    parsed = email.message_from_string(message)
    payload = parsed.get_payload(decode=True)
    charset = parsed.get_content_charset() or "utf-8"
    try:
        body = payload.decode(charset, "replace") if isinstance(payload, bytes) else str(payload or "")
    except LookupError:
        body = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
    headers = [{"name": name, "value": " ".join(decode_header_value(value).split())}
               for name, value in parsed.items() if name.lower().startswith("x-")]
    if len(headers) > MAX_X_HEADERS:
        raise StepFailure(STEP, "the probe has %d X- headers; Graph takes at most %d" % (len(headers), MAX_X_HEADERS))
    msg: dict[str, Any] = {
        "subject": " ".join(decode_header_value(parsed.get("Subject", "")).split()),
        "body": {"contentType": "Text", "content": body.replace("\r\n", "\n")},
        "toRecipients": [{"emailAddress": {"address": rcpt_to}}],
        "internetMessageHeaders": headers,
    }
    if mail_from.lower() != user.lower():
        msg["from"] = {"emailAddress": {"address": mail_from}}
    return {"message": msg, "saveToSentItems": False}


class GraphSender:
    """The Sender of a run that sends by Graph, through the run's client *graph*."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph

    def __call__(self, message: str, mail_from: str, rcpt_to: str, endpoint: Endpoint, deadline: Deadline,
                 local_hostname: Optional[str] = None) -> SendResult:
        """Send *message* (*local_hostname* is Exchange's business here); a SendResult, never raises."""
        user = endpoint.user or mail_from
        try:
            body = json.dumps(sendmail_body(message, mail_from, rcpt_to, user)).encode("utf-8")
            answer = self.graph.call(STEP, deadline, "POST", user_path(user, "sendMail"), body=body,
                                     missing=Missing(user))
        except Unclear as unclear:
            if unclear.handed_over:
                return SendResult(UNCERTAIN, StepFailure(STEP, "no answer after the message went out, outcome "
                                                               "unknown: %s" % unclear.detail))
            return SendResult(FAILED, unclear)
        except StepFailure as failure:  # Graph's refusal, the token, the connection
            return SendResult(FAILED, failure)
        reply = "HTTP %d %s" % (answer.status, "Accepted" if answer.status == 202 else "from sendMail")
        return SendResult(SENT, None, reply + (" (request-id %s)" % answer.request_id if answer.request_id else ""))
