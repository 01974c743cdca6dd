"""Microsoft Graph's answers in the check's words, and the probe as a sendMail request: in-process.

graph_http reads Graph's error JSON (code and message, the HTTP status), tells an
HTML page, garbage and JSON cut off apart, reads Retry-After (seconds or an HTTP
date), and says what a 401, 403 and 404 mean; graph_send turns the probe into the
JSON sendMail request (no copy in Sent Items, the X- headers as
internetMessageHeaders) whose message, as Exchange writes it, verifies like the
probe itself.
"""

import json
import time

import pytest

from check_mail_roundtrip import graph_http as gh
from check_mail_roundtrip.budget import Deadline
from check_mail_roundtrip.failure import StepFailure
from check_mail_roundtrip.graph_send import sendmail_body
from check_mail_roundtrip.probe import RETURN_HEADER, Probe, message_text, recognise
from check_mail_roundtrip.settings import Endpoint

SECRET = b"k" * 32
FROM = "monitor@example.org"


def error(code, message, status=403):
    return json.dumps({"error": {"code": code, "message": message,
                                 "innerError": {"date": "2026-01-01T00:00:00", "request-id": "x"}}}).encode()


def test_graphs_error_json_gives_its_code_and_message_with_the_status():
    assert gh.error_words(403, "Forbidden", "application/json", error(
        "ErrorAccessDenied", "Access is denied. Check credentials and try again.")) == (
        "ErrorAccessDenied: Access is denied. Check credentials and try again (HTTP 403)", "ErrorAccessDenied")
    assert gh.error_words(500, "Internal Server Error", "application/json", error("", "Something  went\nwrong")) == (
        "Something went wrong (HTTP 500)", "")
    assert gh.error_words(500, "Internal Server Error", "", b"") == ("HTTP 500 Internal Server Error, no body", "")


@pytest.mark.parametrize("kind, raw, words", [
    ("text/html", b"<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head><body>...</body></html>",
     "HTTP 502 Bad Gateway: an HTML page (502 Bad Gateway) instead of Graph's JSON (a proxy or gateway in the way?)"),
    ("application/json", b"\x00\x1f\x8b garbage }{\r\n",
     "HTTP 502 Bad Gateway: the answer is not JSON (application/json): ? ? garbage }{"),
    ("application/json", b'{"value": [{"id": "AAMk", "subject": "a mess',
     "HTTP 502 Bad Gateway: Graph's JSON breaks off after 44 bytes (answer truncated)"),
    ("application/json", b'{"value": [{"id": tr', "HTTP 502 Bad Gateway: Graph's JSON breaks off after 20 bytes "
                                                  "(answer truncated)"),
    ("application/json", b"[" * 100000, "HTTP 502 Bad Gateway: Graph's JSON is nested too deep"),
    ("", b'{"a": 1}}', "HTTP 502 Bad Gateway: the answer is not JSON (no content type): {\"a\": 1}}"),
])
def test_what_is_not_graphs_json_is_told_apart(kind, raw, words):
    assert gh.error_words(502, "Bad Gateway", kind, raw) == (words, "")


def test_a_long_garbage_answer_is_cut_and_shows_no_control_characters():
    words, _ = gh.error_words(200, "OK", "text/plain", b"\x07x" * 5000)
    assert words == "HTTP 200 OK: the answer is not JSON (text/plain): " + "?x" * 30 + "..."


def test_retry_after_in_seconds_or_as_an_http_date_none_unreadable():
    now = time.mktime((2015, 10, 21, 7, 27, 50, 0, 0, 0)) - time.timezone
    assert gh.retry_after("7", now) == 7.0
    assert gh.retry_after(" 120 ", now) == 120.0
    assert gh.retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now) == 10.0
    assert gh.retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now) == 0.0  # in the past: at once
    assert gh.retry_after(None, now) == gh.retry_after("", now) == gh.NO_RETRY_AFTER
    assert gh.retry_after("soon", now) is None


def test_a_wait_that_does_not_fit_is_named_with_the_time_left():
    deadline = Deadline(100.0, lambda: 93.6)
    words = "ApplicationThrottled: Application is over its MailboxConcurrency limit (HTTP 429)"
    assert gh.throttled(words, "120", 120.0, deadline) == words + "; Retry-After 120s does not fit in the 6s left (-t)"
    assert gh.throttled(words, None, 1.0, deadline) == words + "; no Retry-After does not fit in the 6s left (-t)"
    assert gh.throttled(words, "soon", None, deadline) == words + "; Retry-After 'soon' unreadable"


def test_401_403_and_404_say_what_they_mean():
    words = "InvalidAuthenticationToken: Access token has expired (HTTP 401)"
    assert gh.explained(words, 401, "InvalidAuthenticationToken", None, renewed=False) == words
    assert gh.explained(words, 401, "InvalidAuthenticationToken", None, renewed=True) == \
        words + " (with a fresh token too)"
    assert gh.explained("ErrorAccessDenied: Access is denied (HTTP 403)", 403, "ErrorAccessDenied", None, False) == (
        "ErrorAccessDenied: Access is denied (HTTP 403); the app needs the application permissions Mail.ReadWrite "
        "and Mail.Send for this mailbox (application access policy or RBAC for Applications)")
    folder = gh.Missing("monitor@example.org", "inbox")
    user = "ErrorInvalidUser: The requested user 'monitor@example.org' is invalid (HTTP 404)"
    assert gh.explained(user, 404, "ErrorInvalidUser", folder, False) == (
        "mailbox monitor@example.org not found: %s; --graph-user names it (its user principal name or id)" % user)
    item = "ErrorItemNotFound: The specified object was not found in the store (HTTP 404)"
    assert gh.explained(item, 404, "ErrorItemNotFound", folder, False) == (
        'folder "inbox" not found in mailbox monitor@example.org: %s; --graph-folder takes a well-known name '
        "(inbox, junkemail, ...) or a folder id" % item)
    assert gh.explained("HTTP 404 Not Found, no body", 404, "", gh.Missing("m@x"), False).startswith("mailbox m@x ")
    assert gh.explained(item, 404, "ErrorItemNotFound", None, False) == item  # a message: the caller's business


def test_paths_and_queries_are_written_as_graphs_examples_write_them():
    assert gh.user_path("monitor@example.org", "mailFolders", "AAMk+a/b=", "messages") == \
        "/v1.0/users/monitor@example.org/mailFolders/AAMk%2Ba%2Fb%3D/messages"
    assert gh.query_text({"$filter": "receivedDateTime ge 2026-01-01T00:00:00Z and startswith(subject,'a b')",
                          "$top": "50"}) == \
        "$filter=receivedDateTime%20ge%202026-01-01T00:00:00Z%20and%20startswith(subject,'a%20b')&$top=50"


def probe_text(mail_from=FROM, rcpt_to=FROM):
    probe = Probe("p", "0123456789abcdef", 1_700_000_000_000)
    token = probe.token(SECRET)
    return probe, token, message_text(probe, SECRET, mail_from, rcpt_to, "mon1.example.org", 1.7e9,
                                      [(RETURN_HEADER, "signed-return-address")])


def test_the_probe_goes_as_json_without_a_copy_in_sent_items_its_x_headers_as_internet_message_headers():
    probe, token, text = probe_text(rcpt_to="echo@example.net")
    body = sendmail_body(text, FROM, "echo@example.net", FROM)
    assert body["saveToSentItems"] is False
    msg = body["message"]
    assert sorted(msg) == ["body", "internetMessageHeaders", "subject", "toRecipients"]  # from: the mailbox itself
    assert msg["subject"] == "Mail round-trip probe " + token
    assert msg["toRecipients"] == [{"emailAddress": {"address": "echo@example.net"}}]
    assert msg["internetMessageHeaders"] == [{"name": "X-Mail-Roundtrip", "value": token},
                                             {"name": RETURN_HEADER, "value": "signed-return-address"}]
    assert msg["body"]["contentType"] == "Text"
    assert msg["body"]["content"].startswith("This is an automatic test message from check_mail_roundtrip,\n")
    # as Exchange writes it: the subject and the x- headers; it verifies as the probe
    written = "Subject: %s\r\n" % msg["subject"] + "".join(
        "%s: %s\r\n" % (h["name"], h["value"]) for h in msg["internetMessageHeaders"])
    assert recognise(written.encode(), SECRET, "p") == (probe, None)


def test_from_is_sent_only_when_it_is_not_the_mailbox_itself():
    _probe, _token, text = probe_text(mail_from="alerts@example.org")
    assert sendmail_body(text, "alerts@example.org", FROM, FROM)["message"]["from"] == {
        "emailAddress": {"address": "alerts@example.org"}}
    _probe, _token, text = probe_text()
    assert "from" not in sendmail_body(text, "Monitor@Example.org", FROM, FROM)["message"]


class Tokens:
    """A token source: token() and renew() as oauth2.TokenSource gives them (renewed once)."""

    def __init__(self):
        self.notes, self.given = [], ["token-1"]

    def token(self, deadline):
        return self.given[-1]

    def renew(self, deadline):
        if len(self.given) > 1:
            return None
        self.given.append("token-2")
        return "token-2"


class Scripted(gh.Graph):
    """graph_http.Graph whose exchanges are answered from *answers* (status, headers): what the
    client does with Graph's answers, without a server."""

    def __init__(self, *answers):
        super().__init__(Endpoint("Graph", "graph.example", 443, "tls", "m@x", auth="oauth2", oauth2=Tokens()))
        self.answers, self.tokens_sent = list(answers), []

    def _exchange(self, step_name, deadline, method, path, body, content_type, token):
        self.tokens_sent.append(token)
        status, headers = self.answers.pop(0)
        raw = b"" if status < 300 else error("Code%d" % status, "said %d." % status, status)
        return status, "Reason", headers, raw


def test_a_throttled_request_is_made_again_after_each_wait_at_most_three_times(monkeypatch):
    slept = []
    monkeypatch.setattr(gh.time, "sleep", slept.append)
    deadline = Deadline(1e12)
    graph = Scripted((429, {"retry-after": "1"}), (503, {"retry-after": "2"}), (204, {}))
    assert graph.call("Graph delete", deadline, "POST", "/v1.0/x").status == 204
    assert slept == [1.0, 2.0]
    graph = Scripted(*[(429, {"retry-after": "0"})] * 4)
    with pytest.raises(gh.Refused) as failed:
        graph.call("Graph list", deadline, "GET", "/v1.0/x")
    assert str(failed.value) == "Graph list failed: Code429: said 429 (HTTP 429); still throttled after 3 waits"
    graph = Scripted((429, {"retry-after": "in a while"}))
    with pytest.raises(gh.Refused) as failed:
        graph.call("Graph list", deadline, "GET", "/v1.0/x")
    assert str(failed.value) == "Graph list failed: Code429: said 429 (HTTP 429); Retry-After 'in a while' unreadable"


def test_a_refused_token_is_renewed_once_and_a_second_refusal_says_so():
    deadline = Deadline(1e12)
    graph = Scripted((401, {}), (200, {}))
    assert graph.call("Graph list", deadline, "GET", "/v1.0/x").status == 200
    assert graph.tokens_sent == ["token-1", "token-2"]
    assert graph.ep.oauth2.notes == ["OAuth2: Graph refused the token (Code401: said 401 (HTTP 401)); one more try "
                                     "with a fresh one (Graph list)"]
    graph = Scripted((401, {}), (401, {}))
    with pytest.raises(gh.Refused) as failed:
        graph.call("Graph list", deadline, "GET", "/v1.0/x")
    assert str(failed.value) == "Graph list failed: Code401: said 401 (HTTP 401) (with a fresh token too)"
    graph = Scripted((401, {}))
    graph.ep.oauth2.given.append("token-2")  # the source can do no better
    with pytest.raises(StepFailure) as failed:
        graph.call("Graph list", deadline, "GET", "/v1.0/x")
    assert str(failed.value) == "Graph list failed: Code401: said 401 (HTTP 401)"
