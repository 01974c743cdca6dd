"""The lab's Microsoft Graph mail stand-in (tests/lab/graph.py) against Microsoft's documented behaviour.

Plain http.client requests, no product code: listing a folder with $filter,
$orderby, $select, $top and @odata.nextLink (and 400 InefficientFilter when
$orderby's property is not first in $filter), internetMessageHeaders only when
selected, permanentDelete (gone) against DELETE (moved to Deleted Items),
sendMail as JSON (saveToSentItems, at most 5 x- headers) and as base64 MIME
(always a Sent Items copy, bad base64 refused), bearer tokens of the lab's
token service (inactive 401, another mailbox 403), the faults the stand-in
can play, the lab's own faults seen through Graph, request counters and
keep-alive.
"""

import base64
import datetime
import http.client
import json
import re
import socket
import ssl
import time
import urllib.parse

import pytest

MONITOR = "monitor@lab.test"
OTHER = "other@lab.test"
GRAPH_SCOPE = "https://graph.microsoft.com/.default"
TIMEOUT = 20


class Client:
    """One keep-alive HTTPS connection to the stand-in, verified with the lab CA."""

    def __init__(self, graph, token=None, user=MONITOR):
        self.graph = graph
        self.token = token if token is not None else graph.lab.tokens.access_token(user)
        self.conn = http.client.HTTPSConnection("127.0.0.1", graph.port, timeout=TIMEOUT,
                                                context=ssl.create_default_context(cafile=graph.lab.ca_file))

    def request(self, method, path, body=None, headers=None, token=True):
        """(status, headers, parsed JSON or raw bytes) of one request; *path* may be a full URL."""
        if path.startswith(self.graph.url):
            path = path[len(self.graph.url):]
        heads = {"Authorization": "Bearer " + self.token} if token else {}
        heads.update(headers or {})
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            heads.setdefault("Content-Type", "application/json")
        self.conn.request(method, path, body=body, headers=heads)
        resp = self.conn.getresponse()
        data = resp.read()
        try:
            parsed = json.loads(data) if data else None
        except ValueError:
            parsed = data
        return resp.status, resp.headers, parsed

    def get(self, path, **query):
        if query:
            path += "?" + urllib.parse.urlencode(query, quote_via=urllib.parse.quote)
        return self.request("GET", path)

    def close(self):
        self.conn.close()


def users(user=MONITOR):
    return "/v1.0/users/%s" % user


def inbox(user=MONITOR):
    return users(user) + "/mailFolders/inbox/messages"


def error(answer):
    """(status, error.code) of an answer."""
    status, _headers, body = answer
    return status, body["error"]["code"]


@pytest.fixture
def client(graph):
    c = Client(graph)
    yield c
    c.close()


def deliver(lab, n, subject="probe %d", to=MONITOR, **kw):
    for i in range(n):
        lab.send(to=to, subject=subject % i, **kw)
    return lab.wait_for(to, n)


def since(seconds=3600):
    return (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=seconds)) \
        .strftime("%Y-%m-%dT%H:%M:%SZ")


# ------------------------------------------------------------------ folders


def test_folders_by_well_known_name_and_by_id(graph, client):
    """GET mailFolders lists the four folders every Exchange mailbox has; each can be
    read by its well-known name and by its id; a folder that does not exist is 404."""
    status, _h, body = client.get(users() + "/mailFolders")
    assert status == 200
    names = {f["displayName"]: f for f in body["value"]}
    assert {"Inbox", "Junk Email", "Sent Items", "Deleted Items"} <= set(names)
    for well_known, display in (("inbox", "Inbox"), ("junkemail", "Junk Email"), ("deleteditems", "Deleted Items")):
        status, _h, by_name = client.get(users() + "/mailFolders/" + well_known)
        assert status == 200 and by_name["displayName"] == display
        status, _h, by_id = client.get(users() + "/mailFolders/" + by_name["id"])
        assert status == 200 and by_id["id"] == by_name["id"] == names[display]["id"]
    assert error(client.get(users() + "/mailFolders/nosuchfolder")) == (404, "ErrorItemNotFound")
    assert error(client.get(users() + "/mailFolders/nosuchfolder/messages")) == (404, "ErrorItemNotFound")
    assert error(client.get(users() + "/mailFolders/Junk Email".replace(" ", "%20"))) == (404, "ErrorItemNotFound")


def test_a_folder_of_its_own_is_reached_by_its_id(graph, lab, client):
    """A folder that is not well-known is listed by GET mailFolders and reached by its id, not its name."""
    lab.fill(MONITOR, 2, folder="Probes", subject="kept %d")
    folders = {f["displayName"]: f for f in client.get(users() + "/mailFolders")[2]["value"]}
    assert folders["Probes"]["totalItemCount"] == 2
    status, _h, body = client.get(users() + "/mailFolders/%s/messages" % folders["Probes"]["id"],
                                  **{"$select": "subject"})
    assert status == 200 and sorted(m["subject"] for m in body["value"]) == ["kept 0", "kept 1"]
    assert error(client.get(users() + "/mailFolders/Probes/messages")) == (404, "ErrorItemNotFound")


# ------------------------------------------------------------------ listing


def test_listing_filters_orders_selects_and_pages(graph, lab, client):
    """$filter (receivedDateTime first, then startswith(subject)), $orderby newest first,
    $select and $top 2: three pages linked by full @odata.nextLink URLs, the last without one."""
    deliver(lab, 5)
    deliver(lab, 2, subject="other mail %d")
    lab.wait_for(MONITOR, 7)
    query = {"$filter": "receivedDateTime ge %s and startswith(subject,'probe')" % since(),
             "$orderby": "receivedDateTime desc", "$select": "id,subject,receivedDateTime", "$top": "2"}
    status, _h, page = client.get(inbox(), **query)
    assert status == 200
    seen = []
    for expected in (2, 2, 1):
        assert len(page["value"]) == expected
        for item in page["value"]:
            assert set(item) == {"@odata.etag", "id", "subject", "receivedDateTime"}
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", item["receivedDateTime"])
        seen += page["value"]
        link = page.get("@odata.nextLink")
        if expected == 1:
            assert link is None
            break
        assert link.startswith(graph.url + inbox() + "?")
        status, _h, page = client.request("GET", link)
        assert status == 200
    arrived = [m["subject"] for m in sorted(lab.messages(MONITOR), key=lambda m: m["uid"])]
    assert [m["subject"] for m in seen] == [s for s in reversed(arrived) if s.startswith("probe")]
    assert len({m["id"] for m in seen}) == 5


def test_listing_default_page_size_and_top_bounds(graph, lab, client):
    """Without $top a page has 10 messages; $top takes 1 to 1000."""
    lab.fill(MONITOR, 12)
    status, _h, page = client.get(inbox(), **{"$select": "subject"})
    assert status == 200 and len(page["value"]) == 10 and "@odata.nextLink" in page
    status, _h, rest = client.request("GET", page["@odata.nextLink"])
    assert status == 200 and len(rest["value"]) == 2 and "@odata.nextLink" not in rest
    assert error(client.get(inbox(), **{"$top": "1001"}))[0] == 400
    assert error(client.get(inbox(), **{"$top": "0"}))[0] == 400
    assert client.get(inbox(), **{"$top": "1000"})[0] == 200


def test_inefficient_filter(graph, lab, client):
    """Exchange refuses $orderby on a property that is not the first of $filter: 400 InefficientFilter."""
    deliver(lab, 1)
    wrong = {"$filter": "startswith(subject,'probe') and receivedDateTime ge %s" % since(),
             "$orderby": "receivedDateTime desc"}
    assert error(client.get(inbox(), **wrong)) == (400, "InefficientFilter")
    missing = {"$filter": "startswith(subject,'probe')", "$orderby": "receivedDateTime desc"}
    assert error(client.get(inbox(), **missing)) == (400, "InefficientFilter")
    right = {"$filter": "receivedDateTime ge %s and startswith(subject,'probe')" % since(),
             "$orderby": "receivedDateTime desc"}
    status, _h, body = client.get(inbox(), **right)
    assert status == 200 and [m["subject"] for m in body["value"]] == ["probe 0"]
    assert client.get(inbox(), **{"$orderby": "receivedDateTime desc"})[0] == 200
    for condition, found in (("ge 1900-01-01T00:00:00Z", ["probe 0"]), ("lt 1900-01-01T00:00:00Z", []),
                             ("lt 2999-01-01T00:00:00Z", ["probe 0"])):
        query = {"$filter": "receivedDateTime %s and startswith(subject,'probe')" % condition,
                 "$orderby": "receivedDateTime desc"}
        status, _h, body = client.get(inbox(), **query)
        assert status == 200 and [m["subject"] for m in body["value"]] == found


def test_filter_on_received_date_time_is_exact(graph, lab, client):
    """receivedDateTime is the IMAP arrival time (UTC, Z): ge a second after it excludes the message."""
    deliver(lab, 1)
    status, _h, body = client.get(inbox(), **{"$select": "receivedDateTime"})
    received = datetime.datetime.strptime(body["value"][0]["receivedDateTime"], "%Y-%m-%dT%H:%M:%SZ")
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    assert abs((now - received).total_seconds()) < 60
    at = received.strftime("%Y-%m-%dT%H:%M:%SZ")
    after = (received + datetime.timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert len(client.get(inbox(), **{"$filter": "receivedDateTime ge %s" % at})[2]["value"]) == 1
    assert client.get(inbox(), **{"$filter": "receivedDateTime ge %s" % after})[2]["value"] == []


def test_headers_only_when_selected(graph, lab, client):
    """internetMessageHeaders is never in a default answer; with $select it has the mail's headers."""
    deliver(lab, 1, headers={"X-Probe-Token": "abc123"})
    status, _h, plain = client.get(inbox())
    assert status == 200 and "internetMessageHeaders" not in plain["value"][0]
    assert plain["value"][0]["subject"] == "probe 0" and "body" in plain["value"][0]
    status, _h, chosen = client.get(inbox(), **{"$select": "subject,internetMessageHeaders"})
    headers = chosen["value"][0]["internetMessageHeaders"]
    assert {"name": "X-Probe-Token", "value": "abc123"} in headers
    assert {"name": "Subject", "value": "probe 0"} in headers
    assert set(chosen["value"][0]) == {"@odata.etag", "id", "subject", "internetMessageHeaders"}
    status, _h, one = client.get(users() + "/messages/" + chosen["value"][0]["id"],
                                 **{"$select": "internetMessageHeaders"})
    assert status == 200 and one["internetMessageHeaders"] == headers


def test_reading_leaves_mail_unread(graph, lab, client):
    """Listing and getting a message (body included) does not mark it read."""
    deliver(lab, 1)
    status, _h, body = client.get(inbox())
    mid = body["value"][0]["id"]
    assert body["value"][0]["isRead"] is False
    assert client.get(users() + "/messages/" + mid)[2]["body"]["content"].startswith("mail lab test")
    assert lab.messages(MONITOR)[0]["flags"] & {"\\Seen"} == set()


# ---------------------------------------------------------------- deleting


def test_permanent_delete_removes_and_delete_moves_to_deleted_items(graph, lab, client):
    """POST permanentDelete: 204 and the mail is gone (also from Deleted Items); DELETE: 204
    and the mail is in Deleted Items under a new id; the old id is then 404."""
    deliver(lab, 2)
    ids = {m["subject"]: m["id"] for m in client.get(inbox())[2]["value"]}
    status, _h, body = client.request("POST", users() + "/messages/%s/permanentDelete" % ids["probe 0"])
    assert (status, body) == (204, None)
    status, _h, body = client.request("DELETE", users() + "/messages/%s" % ids["probe 1"])
    assert (status, body) == (204, None)
    assert client.get(inbox())[2]["value"] == []
    trash = client.get(users() + "/mailFolders/deleteditems/messages")[2]["value"]
    assert [m["subject"] for m in trash] == ["probe 1"] and trash[0]["id"] != ids["probe 1"]
    assert [m["subject"] for m in lab.messages(MONITOR, "Trash")] == ["probe 1"]
    for mid in ids.values():
        assert error(client.get(users() + "/messages/" + mid)) == (404, "ErrorItemNotFound")
    assert error(client.request("POST", users() + "/messages/%s/permanentDelete" % ids["probe 0"])) == (
        404, "ErrorItemNotFound")
    assert error(client.get(users() + "/messages/not-an-id")) == (400, "ErrorInvalidIdMalformed")


# ----------------------------------------------------------------- sendMail


def json_mail(subject, to=OTHER, headers=(), save=None):
    body = {"message": {"subject": subject, "body": {"contentType": "Text", "content": "probe body"},
                        "toRecipients": [{"emailAddress": {"address": to}}],
                        "internetMessageHeaders": [{"name": n, "value": v} for n, v in headers]}}
    if save is not None:
        body["saveToSentItems"] = save
    return body


def test_send_json_with_x_headers_and_sent_items(graph, lab, client):
    """sendMail JSON: 202, delivered through Postfix with the x- headers; a Sent Items
    copy unless saveToSentItems is false."""
    headers = [("x-probe-%d" % i, "value %d" % i) for i in range(5)]
    status, _h, body = client.request("POST", users() + "/sendMail", json_mail("kept", headers=headers))
    assert (status, body) == (202, None)
    status, _h, body = client.request("POST", users() + "/sendMail", json_mail("not kept", save=False))
    assert (status, body) == (202, None)
    lab.wait_for(OTHER, 2)
    other = Client(graph, user=OTHER)
    got = {m["subject"]: m for m in other.get(inbox(OTHER), **{"$select": "subject,internetMessageHeaders,from"})[2]["value"]}
    other.close()
    assert set(got) == {"kept", "not kept"}
    names = {h["name"].lower(): h["value"] for h in got["kept"]["internetMessageHeaders"]}
    assert all(names["x-probe-%d" % i] == "value %d" % i for i in range(5))
    assert got["kept"]["from"]["emailAddress"]["address"] == MONITOR
    sent = client.get(users() + "/mailFolders/sentitems/messages")[2]["value"]
    assert [m["subject"] for m in sent] == ["kept"] and sent[0]["isRead"] is True


def test_send_json_refuses_more_than_five_or_non_x_headers(graph, lab, client):
    """Six internetMessageHeaders: 400 InvalidInternetMessageHeaderCollection; a name without
    x-: 400 InvalidInternetMessageHeader; nothing is sent."""
    six = [("x-h%d" % i, "v") for i in range(6)]
    assert error(client.request("POST", users() + "/sendMail", json_mail("six", headers=six))) == (
        400, "InvalidInternetMessageHeaderCollection")
    assert error(client.request("POST", users() + "/sendMail", json_mail("plain", headers=[("Probe", "v")]))) == (
        400, "InvalidInternetMessageHeader")
    assert error(client.request("POST", users() + "/sendMail", b"{not json",
                                {"Content-Type": "application/json"}))[0] == 400
    time.sleep(1)
    assert lab.count(OTHER) == (0, 0)
    assert client.get(users() + "/mailFolders/sentitems/messages")[2]["value"] == []


def mime(subject, to=OTHER, extra=""):
    return ("From: %s\r\nTo: %s\r\nSubject: %s\r\nMessage-ID: <%s@probe.lab.test>\r\n%s"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nprobe body\r\n"
            % (MONITOR, to, subject, subject.replace(" ", "."), extra)).encode()


def test_send_mime_is_delivered_as_is_and_kept_in_sent_items(graph, lab, client):
    """sendMail MIME (base64 text/plain): 202, the message delivered with its own headers
    (X- headers of any number included) and a copy in Sent Items."""
    extra = "".join("X-Probe-%d: %d\r\n" % (i, i) for i in range(8))
    status, _h, body = client.request("POST", users() + "/sendMail", base64.b64encode(mime("mime one", extra=extra)),
                                      {"Content-Type": "text/plain"})
    assert (status, body) == (202, None)
    lab.wait_for(OTHER, 1)
    delivered = lab.messages(OTHER)[0]
    assert delivered["subject"] == "mime one" and delivered["message_id"] == "<mime.one@probe.lab.test>"
    other = Client(graph, user=OTHER)
    heads = other.get(inbox(OTHER), **{"$select": "internetMessageHeaders"})[2]["value"][0]["internetMessageHeaders"]
    other.close()
    assert all({"name": "X-Probe-%d" % i, "value": str(i)} in heads for i in range(8))
    sent = lab.messages(MONITOR, "Sent")
    assert [(m["subject"], m["message_id"]) for m in sent] == [("mime one", "<mime.one@probe.lab.test>")]


def test_send_mime_bad_base64(graph, lab, client):
    """A MIME body that is not base64: 400 ErrorMimeContentInvalidBase64String, nothing sent."""
    answer = client.request("POST", users() + "/sendMail", b"this is not base64!", {"Content-Type": "text/plain"})
    assert error(answer) == (400, "ErrorMimeContentInvalidBase64String")
    assert answer[2]["error"]["message"] == "Invalid base64 string for MIME content."
    time.sleep(1)
    assert lab.count(OTHER) == (0, 0)


# ------------------------------------------------------------------- tokens


def test_tokens(graph, lab):
    """No token, an unknown, revoked or expired one: 401 InvalidAuthenticationToken with
    WWW-Authenticate; the token of another mailbox: 403 ErrorAccessDenied; a user that does
    not exist: 404 ErrorInvalidUser; a client-credentials token for Graph's scope works."""
    tokens = lab.tokens
    c = Client(graph, token="lab-at-unknown")
    status, headers, body = c.get(inbox())
    assert (status, body["error"]["code"]) == (401, "InvalidAuthenticationToken")
    assert headers["WWW-Authenticate"].startswith("Bearer ")
    assert error(c.request("GET", inbox(), token=False)) == (401, "InvalidAuthenticationToken")
    revoked = tokens.access_token("monitor")
    tokens.revoke(revoked)
    c.token = revoked
    assert error(c.get(inbox())) == (401, "InvalidAuthenticationToken")
    c.token = tokens.access_token("monitor", expires_in=0)
    assert error(c.get(inbox())) == (401, "InvalidAuthenticationToken")
    c.token = tokens.access_token("other")
    assert error(c.get(inbox())) == (403, "ErrorAccessDenied")
    assert error(c.get(inbox("nobody@lab.test"))) == (404, "ErrorInvalidUser")
    client_id, secret = tokens.client("monitor")
    status, answer = tokens.post_token({"grant_type": "client_credentials", "client_id": client_id,
                                        "client_secret": secret, "scope": GRAPH_SCOPE})
    assert status == 200
    c.token = answer["access_token"]
    assert c.get(inbox())[0] == 200
    status, answer = tokens.post_token({"grant_type": "client_credentials", "client_id": client_id,
                                        "client_secret": secret, "scope": "https://outlook.office365.com/.default"})
    c.token = answer["access_token"]
    assert error(c.get(inbox())) == (401, "InvalidAuthenticationToken")
    c.close()


def test_error_shape_and_request_id(graph, client):
    """Every answer has a request-id header; an error body is {"error": {code, message,
    innerError: {date, request-id, client-request-id}}} with the same request-id."""
    status, headers, body = client.request("GET", inbox(), headers={"client-request-id": "my-id-1"},
                                           token=False)
    assert status == 401 and headers["request-id"] and headers["client-request-id"] == "my-id-1"
    assert set(body["error"]) == {"code", "message", "innerError"}
    assert body["error"]["innerError"]["request-id"] == headers["request-id"]
    assert body["error"]["innerError"]["client-request-id"] == "my-id-1"
    status, headers, _body = client.get(inbox())
    assert status == 200 and re.fullmatch(r"[0-9a-f-]{36}", headers["request-id"])


# ----------------------------------------------------------- counters, keep-alive


def test_requests_are_counted_and_one_connection_carries_them(graph, lab, client):
    """Every request is in .requests (method, path, query, status, bytes in and out, its
    connection); HTTP/1.1 keep-alive: one connection carries them all."""
    deliver(lab, 1)
    client.get(inbox(), **{"$top": "5"})
    client.get(users() + "/mailFolders/junkemail")
    client.request("POST", users() + "/sendMail", json_mail("counted"))
    reqs = graph.requests
    assert [(r["method"], r["path"], r["status"]) for r in reqs] == [
        ("GET", inbox(), 200), ("GET", users() + "/mailFolders/junkemail", 200),
        ("POST", users() + "/sendMail", 202)]
    assert reqs[0]["query"] == {"$top": "5"}
    assert all(r["bytes_in"] > 0 and r["bytes_out"] > 0 for r in reqs)
    assert reqs[2]["bytes_in"] > reqs[1]["bytes_in"]
    assert {r["connection"] for r in reqs} == {1} and graph.connections == 1
    graph.reset()
    assert graph.requests == [] and graph.connections == 0


def test_mailbox_concurrency_limit(graph, lab, client):
    """Outlook's documented limit: a fifth request of one app on one mailbox while four
    run answers 429 ApplicationThrottled with Retry-After."""
    client_id, secret = lab.tokens.client("monitor")
    status, answer = lab.tokens.post_token({"grant_type": "client_credentials", "client_id": client_id,
                                            "client_secret": secret, "scope": GRAPH_SCOPE})
    client.token = answer["access_token"]
    graph.api.running[(client_id, MONITOR)] = 4  # four requests of this app in flight
    try:
        status, headers, body = client.get(inbox())
    finally:
        graph.api.running[(client_id, MONITOR)] = 0
    assert (status, body["error"]["code"]) == (429, "ApplicationThrottled")
    assert body["error"]["message"] == "Application is over its MailboxConcurrency limit."
    assert headers["Retry-After"] == "1"
    assert client.get(inbox())[0] == 200


# ------------------------------------------------------------------- faults


@pytest.mark.parametrize("kind, status, code, retry_after", [
    ("429", 429, "ApplicationThrottled", "7"),
    ("503", 503, "serviceNotAvailable", "7"),
    ("401", 401, "InvalidAuthenticationToken", None),
    ("403", 403, "ErrorAccessDenied", None),
    ("404-user", 404, "ErrorInvalidUser", None),
    ("404-folder", 404, "ErrorItemNotFound", None),
])
def test_status_faults(graph, lab, client, kind, status, code, retry_after):
    """A status fault answers the next request (only) in Graph's error shape, Retry-After on
    429 and 503; the request it answers changes nothing."""
    deliver(lab, 1)
    mid = client.get(inbox())[2]["value"][0]["id"]
    graph.fault(kind, retry_after=7)
    got_status, headers, body = client.request("POST", users() + "/messages/%s/permanentDelete" % mid)
    assert (got_status, body["error"]["code"]) == (status, code)
    assert headers.get("Retry-After") == retry_after
    assert headers["request-id"] == body["error"]["innerError"]["request-id"]
    if kind == "404-user":
        assert body["error"]["message"] == "The requested user '%s' is invalid." % MONITOR
    assert lab.count(MONITOR) == (1, 1)
    assert client.request("POST", users() + "/messages/%s/permanentDelete" % mid)[0] == 204
    assert [r["fault"] for r in graph.requests] == [None, kind, None]


def test_fault_matching_times_and_words(graph, client):
    """path_contains and method choose the requests a fault answers, times how many;
    code= and message= give it other words; clear_faults() ends every fault."""
    graph.fault("503", times=2, path_contains="/sendMail", code="ErrorServerBusy", message="Server busy.")
    graph.fault("429", method="DELETE")
    assert client.get(inbox())[0] == 200
    for _ in range(2):
        status, _h, body = client.request("POST", users() + "/sendMail", json_mail("later"))
        assert (status, body["error"]["code"], body["error"]["message"]) == (503, "ErrorServerBusy", "Server busy.")
    assert client.request("POST", users() + "/sendMail", json_mail("now"))[0] == 202
    graph.fault("html", times=5)
    graph.clear_faults()
    assert client.get(inbox())[0] == 200
    with pytest.raises(ValueError):
        graph.fault("418")


def test_html_and_garbage_faults(graph, client):
    """html: 502 with an HTML page; garbage: 200 "JSON" that is not JSON; the connection stays usable."""
    graph.fault("html")
    status, headers, body = client.get(inbox())
    assert status == 502 and headers["Content-Type"] == "text/html" and body.startswith(b"<!DOCTYPE html>")
    graph.fault("garbage")
    status, headers, body = client.get(inbox())
    assert status == 200 and headers["Content-Type"] == "application/json" and isinstance(body, bytes)
    with pytest.raises(ValueError):
        json.loads(body)
    assert client.get(inbox())[0] == 200
    assert graph.connections == 1


def test_truncated_fault(graph, client):
    """truncated: the answer's JSON stops half-way and the connection closes before the
    Content-Length promised; complete=True: a whole HTTP answer whose JSON is cut."""
    graph.fault("truncated")
    client.conn.request("GET", inbox(), headers={"Authorization": "Bearer " + client.token})
    resp = client.conn.getresponse()
    assert resp.status == 200
    with pytest.raises(http.client.IncompleteRead):
        resp.read()
    client.close()
    graph.fault("truncated", complete=True)
    status, _h, body = client.get(inbox())
    assert status == 200 and isinstance(body, bytes) and body.startswith(b'{"@odata.context"')
    with pytest.raises(ValueError):
        json.loads(body)


def test_tarpit_fault(graph, client):
    """tarpit: the request gets no answer for `seconds`, then the connection is closed."""
    graph.fault("tarpit", seconds=1.5)
    client.conn.timeout = 0.5
    with pytest.raises((socket.timeout, TimeoutError)):
        client.get(inbox())
    client.close()
    graph.fault("tarpit", seconds=1.0)
    client.conn.timeout = 10
    start = time.monotonic()
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        client.get(inbox())
    assert 0.9 < time.monotonic() - start < 5
    client.close()
    assert client.get(inbox())[0] == 200
    assert [r["status"] for r in graph.requests] == [None, None, 200]


# ---------------------------------------------------------- the lab's faults


def subjects(client, folder="inbox", user=MONITOR):
    status, _h, body = client.get(users(user) + "/mailFolders/%s/messages" % folder, **{"$select": "subject"})
    assert status == 200
    return sorted(m["subject"] for m in body["value"])


def test_lab_hold_and_drop_apply_to_graph_mail(graph, lab, client):
    """Mail sent by Graph goes through the lab's Postfix: held, it is not listed until
    released; dropped, it never arrives (the Sent Items copy is there all the same)."""
    other = Client(graph, user=OTHER)
    lab.hold()
    assert client.request("POST", users() + "/sendMail", json_mail("held"))[0] == 202
    deadline = time.monotonic() + 10
    while not lab.held() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert lab.held() and subjects(other, user=OTHER) == []
    lab.release()
    lab.wait_for(OTHER, 1)
    assert subjects(other, user=OTHER) == ["held"]
    lab.drop()
    assert client.request("POST", users() + "/sendMail", json_mail("dropped"))[0] == 202
    time.sleep(2)
    assert subjects(other, user=OTHER) == ["held"]
    assert subjects(client, "sentitems") == ["dropped", "held"]
    other.close()


def test_lab_delay_applies_to_graph_mail(graph, lab, client):
    """The delay fault holds Graph's mail as it holds SMTP's."""
    lab.delay(2)
    start = time.monotonic()
    assert client.request("POST", users() + "/sendMail", json_mail("late", to=MONITOR, save=False))[0] == 202
    lab.wait_for(MONITOR, 1, timeout=20)
    assert time.monotonic() - start >= 1.9
    assert subjects(client) == ["late"]


def test_lab_junk_filing_shows_in_junkemail(graph, lab, client):
    """Mail the lab files as junk is listed in junkemail, not in inbox."""
    lab.junk()
    lab.send(to=MONITOR, subject="spammy")
    lab.wait_for(MONITOR, 1, folder="Junk")
    assert subjects(client) == []
    assert subjects(client, "junkemail") == ["spammy"]


def test_lab_imap_down_is_a_503(graph, lab, client):
    """With the lab's IMAP down Graph cannot reach the mailbox: 503 with Retry-After, then fine again."""
    lab.imap_down()
    try:
        status, headers, body = client.get(inbox())
    finally:
        lab.imap_up()
    assert (status, body["error"]["code"]) == (503, "ErrorMailboxStoreUnavailable")
    assert headers["Retry-After"] == "5"
    assert client.get(inbox())[0] == 200


# ------------------------------------------------------------------- bounds


def test_addressing_and_bounds(graph, lab, client):
    """The user may be percent-encoded and in any case; /me is refused for an app-only token;
    a repeated query option is 400; a body larger than 4 MiB gets 413 and the connection closes."""
    deliver(lab, 1)
    assert client.get("/v1.0/users/MONITOR%40LAB.TEST/mailFolders/Inbox/messages")[0] == 200
    assert error(client.get("/v1.0/me/messages")) == (400, "BadRequest")
    assert error(client.get("/beta/users/%s/messages" % MONITOR))[0] == 400
    assert error(client.get(inbox() + "?$top=1&$top=2")) == (400, "BadRequest")
    client.conn.putrequest("POST", users() + "/sendMail")
    client.conn.putheader("Authorization", "Bearer " + client.token)
    client.conn.putheader("Content-Type", "text/plain")
    client.conn.putheader("Content-Length", str(4 * 1024 * 1024 + 1))
    client.conn.endheaders()
    resp = client.conn.getresponse()
    assert resp.status == 413 and resp.getheader("Connection") == "close"
    assert json.loads(resp.read())["error"]["code"] == "RequestEntityTooLarge"


def test_send_to_an_outside_recipient_bounces_and_other_senders_are_refused(graph, lab, client):
    """A recipient the lab's Postfix refuses: sendMail still answers 202 (Exchange submits
    asynchronously) and a non-delivery report arrives in the sender's Inbox; a "from"
    other than the mailbox: 403 ErrorSendAsDenied, nothing sent."""
    assert client.request("POST", users() + "/sendMail", json_mail("far away", to="someone@example.com"))[0] == 202
    lab.wait_for(MONITOR, 1)
    assert subjects(client) == ["Undeliverable: far away"]
    forged = json_mail("forged")
    forged["message"]["from"] = {"emailAddress": {"address": OTHER}}
    assert error(client.request("POST", users() + "/sendMail", forged)) == (403, "ErrorSendAsDenied")
    assert subjects(client, "sentitems") == ["far away"]
