"""The trace fields by Microsoft Graph, in-process: the collector takes a probe's Received and
Authentication-Results fields from the internetMessageHeaders its listing brought, in their
order, with no request of their own; the probe headers it hands on are as before."""

from check_mail_roundtrip import graph
from check_mail_roundtrip.budget import Deadline
from check_mail_roundtrip.graph_http import Answer
from check_mail_roundtrip.settings import Endpoint

ENDPOINT = Endpoint("Graph", "graph.microsoft.com", 443, "tls", "monitor@example.org", auth="oauth2")
SUBJECT = "Mail round-trip probe MRTP1.0123456789ab.x"
HEADERS = [
    {"name": "Received", "value": "from AM0PR01.prod.outlook.com by AM0PR02.prod.outlook.com with HTTPS; "
                                  "Mon, 2 Jan 2023 10:00:05 +0000"},
    {"name": "Authentication-Results", "value": "spf=pass (sender IP is 192.0.2.1) smtp.mailfrom=example.org"},
    {"name": "Subject", "value": SUBJECT},
    {"name": "Received", "value": "from client.example by AM0PR01.prod.outlook.com with ESMTPS; "
                                  "Mon, 2 Jan 2023 10:00:00 +0000"},
    {"name": "X-Mail-Roundtrip", "value": "MRTP1.tok"},
]


class Listing:
    """A Graph client whose every answer is one listed message; what was asked is in ``asked``."""

    def __init__(self):
        self.asked = []

    def call(self, step_name, deadline, method, target, body=None, content_type="application/json", missing=None):
        self.asked.append((method, target))
        return Answer(200, {"value": [{"id": "AAMk1", "subject": SUBJECT, "receivedDateTime": "2023-01-02T10:00:05Z",
                                       "internetMessageHeaders": HEADERS}]})


def test_graph_hands_the_trace_fields_from_its_listing_without_a_request():
    client = Listing()
    c = graph.GraphCollector(client, ENDPOINT, "inbox", Deadline(1e9, lambda: 0.0), memory={}, now=1.7e9)
    refs = c.find("MRTP1.0123456789ab")
    (fetched,) = c.fetch(refs)
    assert fetched.headers == ("Subject: %s\r\nX-Mail-Roundtrip: MRTP1.tok\r\n" % SUBJECT).encode()
    assert c.trace(refs) == {refs[0]: (
        "Received: %s\r\nAuthentication-Results: %s\r\nReceived: %s\r\n"
        % (HEADERS[0]["value"], HEADERS[1]["value"], HEADERS[3]["value"])).encode()}
    assert c.trace([graph.Ref("gone")]) == {}
    assert len(client.asked) == 1   # the listing only
