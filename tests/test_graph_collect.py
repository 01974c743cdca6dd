"""The Graph collector's logic and the Graph options, in-process (the lab tests: test_graph.py).

The collector is given a client that answers from a script: which listing it
asks for (the filter's time: the whole folder once, then since the oldest
probe in flight or the last look, less the margin; back to a kept probe's
arrival until it is removed), the Junk folder that is not there, paging
within its bound, removal by permanentDelete only and an already gone probe,
the probe headers taken from internetMessageHeaders.  The options: both legs
by Graph need no -H, Graph's scope by default, the URL checked, one token
source for all legs.
"""

import argparse
import datetime

import pytest

from check_mail_roundtrip import cli, graph
from check_mail_roundtrip.budget import Deadline
from check_mail_roundtrip.failure import StepFailure
from check_mail_roundtrip.graph_http import Answer, Graph, Refused
from check_mail_roundtrip.settings import Endpoint

USER = "monitor@example.org"
KEY = "MRTP1.0123456789ab"
PREFIX = "startswith(subject,'Mail round-trip probe MRTP1.0123456789ab')"
T0 = 1_800_000_000.0  # the run's clock
ENDPOINT = Endpoint("Graph", "graph.microsoft.com", 443, "tls", USER, auth="oauth2")


class Script:
    """A Graph client answering each request from *answers* (an Answer or a Refused to raise),
    keyed by a part of the request's target; what was asked is in ``asked``."""

    def __init__(self, **answers):
        self.answers = answers
        self.asked = []

    def call(self, step_name, deadline, method, target, body=None, content_type="application/json", missing=None):
        self.asked.append((step_name, method, target))
        for part, answer in self.answers.items():
            if part.replace("_", "/") in target:
                if isinstance(answer, Exception):
                    raise answer
                return answer
        return Answer(200, {"value": []})

    def filters(self):
        import urllib.parse
        return [urllib.parse.parse_qs(urllib.parse.urlsplit(t).query)["$filter"][0]
                for _s, m, t in self.asked if m == "GET"]


def item(mid, received="2027-01-15T08:00:05Z", subject="Mail round-trip probe MRTP1.0123456789ab.x", **more):
    return dict({"id": mid, "subject": subject, "receivedDateTime": received,
                 "internetMessageHeaders": [{"name": "Received", "value": "from a by b"},
                                            {"name": "Subject", "value": subject},
                                            {"name": "X-Mail-Roundtrip", "value": "MRTP1.tok"}]}, **more)


def collector(client, memory=None, junk=True, since=None, readonly=False, folder="inbox", clock=lambda: 0.0):
    return graph.GraphCollector(client, ENDPOINT, folder, Deadline(1e9, clock), readonly, memory, junk, since, T0)


def test_the_first_listing_is_of_the_whole_folder_then_since_the_oldest_in_flight_or_the_last_look():
    memory = {}
    client = Script()
    c = collector(client, memory, since=T0 - 300)
    assert c.find(KEY) == []
    assert client.filters() == ["receivedDateTime ge 1900-01-01T00:00:00Z and " + PREFIX] * 2
    assert [t.split("?")[0] for _s, _m, t in client.asked] == [
        "/v1.0/users/monitor@example.org/mailFolders/junkemail/messages",
        "/v1.0/users/monitor@example.org/mailFolders/inbox/messages"]
    c.settle([], [])
    assert memory["looked"] == {"junkemail": T0, "inbox": T0} and memory["recheck"] is None

    client = Script()
    collector(client, memory, since=T0 - 300).find(KEY)  # the oldest probe in flight, sent 5 min before
    assert client.filters() == ["receivedDateTime ge %s and %s" % (graph.iso(T0 - 300 - graph.MARGIN), PREFIX)] * 2
    client = Script()
    collector(client, memory, since=None).find(KEY)  # nothing in flight: since the last look
    assert client.filters() == ["receivedDateTime ge %s and %s" % (graph.iso(T0 - graph.MARGIN), PREFIX)] * 2


def test_another_mailbox_in_the_memory_is_listed_whole_once_with_a_note():
    memory = {"kind": "imap", "floor": 7}
    client = Script()
    c = collector(client, memory, junk=None)
    c.find(KEY)
    assert client.filters() == ["receivedDateTime ge 1900-01-01T00:00:00Z and " + PREFIX]
    assert c.notes == ["another mailbox, or nothing remembered of it: listing the whole folder once"]
    assert memory["kind"] == "graph" and "floor" not in memory


def test_probes_kept_or_not_yet_removed_are_listed_again_from_their_arrival_until_removed():
    memory = {}
    arrived = "2027-01-10T00:00:00Z"  # long before the run: a probe kept by --keep
    client = Script(inbox=Answer(200, {"value": [item("AAMk1", arrived)]}))
    c = collector(client, memory, junk=None, readonly=True)
    refs = c.find(KEY)
    (fetched,) = c.fetch(refs)
    assert fetched.internaldate == graph.received_at(arrived) and fetched.source == "receivedDateTime"
    c.settle(refs, refs)
    c.remove(refs)
    assert memory["recheck"] == graph.received_at(arrived)
    assert [m for _s, m, _t in client.asked] == ["GET"]  # --keep: nothing removed

    client = Script(inbox=Answer(200, {"value": [item("AAMk1", arrived)]}))
    c = collector(client, memory, junk=None, since=T0 - 60)
    refs = c.find(KEY)
    assert client.filters() == ["receivedDateTime ge %s and %s" % (graph.iso(graph.received_at(arrived)
                                                                              - graph.MARGIN), PREFIX)]
    c.settle(refs, refs)
    c.remove(refs)
    assert client.asked[-1] == ("Graph delete", "POST", "/v1.0/users/monitor@example.org/messages/AAMk1/permanentDelete")
    assert memory["recheck"] is None


def test_a_probe_gone_already_is_no_failure_another_refusal_is_and_time_running_short_leaves_the_rest():
    gone = Refused("Graph delete", "ErrorItemNotFound: gone (HTTP 404)", 404, "ErrorItemNotFound")
    client = Script(AAMk1=gone)
    c = collector(client, junk=None)
    c.remove([graph.Ref("AAMk1"), graph.Ref("AAMk2")])
    assert [t for _s, _m, t in client.asked] == ["/v1.0/users/monitor@example.org/messages/AAMk1/permanentDelete",
                                                  "/v1.0/users/monitor@example.org/messages/AAMk2/permanentDelete"]
    assert c.notes == ["id AAMk1 was gone already (ErrorItemNotFound: gone (HTTP 404))"]
    denied = Refused("Graph delete", "ErrorAccessDenied: no (HTTP 403)", 403, "ErrorAccessDenied")
    with pytest.raises(Refused):
        collector(Script(AAMk1=denied), junk=None).remove([graph.Ref("AAMk1")])
    client = Script()
    c = collector(client, junk=None, clock=lambda: 1e9 - 0.5)  # less than DELETE_RESERVE left
    c.remove([graph.Ref("AAMk1"), graph.Ref("AAMk2")])
    assert client.asked == [] and c.notes == ["2 probe(s) left for the next run to remove (time)"]


def test_a_junk_folder_graph_does_not_find_is_a_note_a_missing_mailbox_is_not():
    missing = Refused("Graph list", "folder ... not found", 404, "ErrorItemNotFound",
                      "ErrorItemNotFound: The specified object was not found in the store (HTTP 404)")
    client = Script(junkemail=missing, inbox=Answer(200, {"value": [item("AAMk1")]}))
    c = collector(client)
    assert [r.id for r in c.find(KEY)] == ["AAMk1"]
    assert c.notes == ['Junk folder "junkemail" not looked into: Graph does not find it (ErrorItemNotFound: The '
                       'specified object was not found in the store (HTTP 404))']
    nobody = Refused("Graph list", "mailbox ... not found", 404, "ErrorInvalidUser")
    with pytest.raises(Refused):
        collector(Script(junkemail=nobody)).find(KEY)


def test_a_junk_folder_that_is_the_collection_folder_is_listed_once():
    client = Script()
    c = collector(client, junk="Inbox")
    c.find(KEY)
    assert len(client.asked) == 1 and c.notes == ['the Junk folder "Inbox" is the collection folder: looked at once']


def test_the_listing_follows_next_links_within_its_bound():
    more = "https://graph.microsoft.com/v1.0/users/monitor@example.org/mailFolders/inbox/messages?$skip=50"
    client = Script(inbox=Answer(200, {"value": [item("AAMk1")], "@odata.nextLink": more}))
    c = collector(client, junk=None)
    assert len(c.find(KEY)) == graph.PAGES and len(client.asked) == graph.PAGES
    assert client.asked[1][2] == more
    assert c.notes == ['more than 1000 probe candidates in "inbox": the newest read this run, the older ones once '
                       "these are removed"]
    with pytest.raises(StepFailure) as failed:
        collector(Script(inbox=Answer(200, {"values": []})), junk=None).find(KEY)
    assert str(failed.value) == 'Graph list failed: Graph\'s answer holds no list of messages (no "value")'


def test_a_next_link_elsewhere_is_not_followed():
    client = Graph(ENDPOINT)
    assert client._path("Graph list", "https://graph.microsoft.com/v1.0/x?$skip=5") == "/v1.0/x?$skip=5"
    assert client._path("Graph list", "https://GRAPH.microsoft.com:443/v1.0/x") == "/v1.0/x"
    for elsewhere in ("https://evil.example/v1.0/x", "http://graph.microsoft.com/v1.0/x",
                      "https://graph.microsoft.com:8443/v1.0/x"):
        with pytest.raises(StepFailure) as failed:
            client._path("Graph list", elsewhere)
        assert str(failed.value) == "Graph list failed: Graph's next page is at another address, not followed: " \
                                    + elsewhere


def test_the_daily_look_lists_what_arrived_before_the_day_for_every_profile():
    client = Script()
    collector(client).find("MRTP1.", before=datetime.date(2027, 1, 8))
    assert client.filters() == ["receivedDateTime lt 2027-01-08T00:00:00Z and startswith(subject,'Mail round-trip "
                                "probe MRTP1.')"] * 2


def test_the_probe_headers_come_from_internet_message_headers_else_the_subject():
    assert graph.header_block(item("AAMk1")) == (b"Subject: Mail round-trip probe MRTP1.0123456789ab.x\r\n"
                                                 b"X-Mail-Roundtrip: MRTP1.tok\r\n")
    assert graph.header_block({"id": "x", "subject": "It's a probe"}) == b"Subject: It's a probe\r\n"
    huge = {"internetMessageHeaders": [{"name": "Subject", "value": "x" * 100000}]}
    assert len(graph.header_block(huge)) == graph.MAX_HEADER
    assert graph.header_block({"internetMessageHeaders": [{"name": 1}, "x", {"name": "Subject"}]}) == b""


def test_times_and_literals_as_graph_writes_them():
    assert graph.received_at("2027-01-15T08:00:05Z") == graph.received_at("2027-01-15T09:00:05+01:00") \
        == graph.received_at("2027-01-15T08:00:05.1234567Z") == 1800000005.0
    assert graph.received_at("yesterday") is graph.received_at(None) is graph.received_at("2027-13-45T99:00:00Z") is None
    assert graph.iso(1800000005.9) == "2027-01-15T08:00:05Z"
    assert graph.odata_string("it's") == "'it''s'"


def parse(*argv):
    args = cli.parser().parse_args(["--from", USER, "--state-dir", "/nonexistent", *argv])
    return cli.settings_from(args)


TOKEN_URL = ("--oauth2-token-url", "https://login.example/token", "--oauth2-client-id", "app")


def test_both_legs_by_graph_need_no_host_and_ask_for_graphs_scope(monkeypatch):
    monkeypatch.setenv(cli.ENV_OAUTH2_SECRET, "client-secret-value")
    s = parse("--collect", "graph", "--send", "graph", *TOKEN_URL)
    assert (s.collect_by, s.send_by, s.smtp, s.imap, s.folder) == ("graph", "graph", None, None, "inbox")
    assert s.collect is s.sending is s.graph
    assert (s.graph.protocol, s.graph.host, s.graph.port, s.graph.user, s.graph.auth) == (
        "Graph", "graph.microsoft.com", 443, USER, "oauth2")
    assert s.graph.oauth2.scope == "https://graph.microsoft.com/.default"
    assert s.profile == "%s>%s graph:graph.microsoft.com:443/%s graph:graph.microsoft.com:443/%s/inbox" % (
        USER, USER, USER, USER)
    s = parse("--collect", "graph", "--graph-url", "https://graph.microsoft.us:8443/", "--graph-user", "m@x.us",
              "--graph-folder", "AAMkFolderId=", "--junk-folder", "AAMkJunkId=", "--oauth2-scope", "s", *TOKEN_URL,
              "-H", "smtp.example.org")
    assert (s.graph.host, s.graph.port, s.graph.user, s.folder, s.junk, s.graph.oauth2.scope) == (
        "graph.microsoft.us", 8443, "m@x.us", "AAMkFolderId=", "AAMkJunkId=", "s")
    assert (s.send_by, s.sending.protocol, s.smtp.host) == ("smtp", "SMTP", "smtp.example.org")


@pytest.mark.parametrize("argv, words", [
    (("--graph-url", "http://graph.microsoft.com"), "--graph-url must be an https:// URL: http://graph.microsoft.com"),
    (("--graph-url", "https://graph.microsoft.com/v1.0"),
     "--graph-url takes the service's address only (https://HOST or https://HOST:PORT, e.g. "
     "https://graph.microsoft.com): https://graph.microsoft.com/v1.0"),
    (("--graph-url", "https://graph.microsoft.com:99999"), "--graph-url https://graph.microsoft.com:99999: not a TCP port"),
    (("--imap-auth", "oauth2", "--collect", "imap", "-H", "mx"),
     "Graph and the OAuth2 login to IMAP need tokens for different services, and the check has one token source: "
     "let Graph do both legs, or log in to IMAP with a password"),
])
def test_graph_options_that_cannot_work_are_usage_errors(monkeypatch, argv, words):
    monkeypatch.setenv(cli.ENV_OAUTH2_SECRET, "client-secret-value")
    with pytest.raises(cli.UsageError) as failed:
        parse("--send", "graph", "--collect", "graph", *TOKEN_URL, *argv)
    assert str(failed.value) == words


def test_a_graph_leg_needs_a_token_source_and_junk_folder_is_for_imap_and_graph():
    with pytest.raises(cli.UsageError) as failed:
        parse("--send", "graph", "--collect", "graph")
    assert str(failed.value) == ("OAuth2 needs exactly one token source: --oauth2-token-file, --oauth2-token-command "
                                 "or --oauth2-token-url")
    with pytest.raises(cli.UsageError) as failed:
        parse("-H", "mx", "--collect", "pop3", "--junk-folder", "Spam")
    assert str(failed.value) == "--junk-folder needs IMAP: POP3 sees only the INBOX"
    assert isinstance(cli.parser().parse_args(["--send", "graph"]), argparse.Namespace)
