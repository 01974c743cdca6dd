"""--collect graph and --send graph against the lab's Microsoft Graph stand-in (tests/lab/graph.py).

The stand-in answers as Graph v1.0 is documented to, backed by the lab's
real Dovecot and Postfix; tokens come from the lab's OAuth2 token service
(client credentials for the monitor mailbox).  Every test runs the real
command and asserts its whole status line and exit code; what went over the
wire is read from the stand-in's request records.  Covered: both legs by
Graph (the server-side filter, the four fields selected, verification,
permanentDelete, nothing else touched, no copy in Sent Items or Deleted
Items, one connection), --keep, the Junk folder, mixed legs both ways,
throttling (Retry-After that fits, and does not), a refused token renewed
once, 403, 404 for the mailbox and the folder, an HTML page, garbage,
truncated JSON and a tarpit within -t, --wait by polling, -vvv, and the cost.
"""

import email.header
import glob
import json
import os
import re
import time

import pytest

from check_mail_roundtrip.budget import Deadline
from check_mail_roundtrip.graph_http import Graph, Unclear
from check_mail_roundtrip.oauth2 import FileToken
from check_mail_roundtrip.probe import profile_key
from check_mail_roundtrip.settings import Endpoint
from tests import faultservers as fs
from tests.checkrun import Checker
from tests.test_lazy_imports import loaded_by

MONITOR = "monitor@lab.test"
OTHER = "other@lab.test"
NUM = r"\d+(?:\.\d+)?"
PERF_FIRST = "junk=0;;;0 lost=0;;;0 oldest_pending=0.0s;120;600;0 pending=1;;;0"
FIRST = "MAIL_ROUNDTRIP OK - first probe sent, 1 in flight | " + PERF_FIRST
BACK = (r"MAIL_ROUNDTRIP OK - round trip (%s)s, 1 in flight, last success \d+s ago \| junk=0;;;0 lost=0;;;0 "
        r"oldest_pending=0\.0s;120;600;0 pending=1;;;0 rtt=(%s)s;120;600;0 since_last_success=%ss;;;0"
        % (NUM, NUM, NUM))
# the status line's end after a failed collection, the probe of this run sent (*n* in flight), after a
# round trip and before the first
AFTER_FAILED_LIST = (r", oldest in flight %ss, %%d in flight, last success \d+s ago \| lost=0;;;0 "
                     r"oldest_pending=%ss;120;600;0 pending=%%d;;;0 since_last_success=%ss;;;0" % (NUM, NUM, NUM))
AFTER_FAILED_FIRST = (r", oldest in flight %ss, %%d in flight, no success yet \| lost=0;;;0 "
                      r"oldest_pending=%ss;120;600;0 pending=%%d;;;0" % (NUM, NUM))
SELECT = "id,subject,receivedDateTime,internetMessageHeaders"
FIX_403 = ("the app needs the application permissions Mail.ReadWrite and Mail.Send for this mailbox (application "
           "access policy or RBAC for Applications)")
DENIED = ("ErrorAccessDenied: Access to OData is disabled: [RAOP] : Blocked by tenant configured AppOnly AccessPolicy "
          "settings (HTTP 403); " + FIX_403)  # what Graph says to a token for another mailbox
NAME = "graph-test"  # --name: the probes' profile key is known


def oauth2(lab, mailbox="monitor"):
    """The client-credentials options for *mailbox*'s client, and the client secret for the environment."""
    client_id, secret = lab.tokens.client(mailbox)
    return ["--oauth2-token-url", lab.tokens.token_url, "--oauth2-client-id", client_id], secret


def graph_checker(graph, tmp_path, *options, legs=("--collect", "graph", "--send", "graph")):
    """The check with both legs by Graph (no -H, no SMTP/IMAP option, no password), or the
    lab's SMTP and IMAP for the legs *legs* leaves them."""
    lab = graph.lab
    source, secret = oauth2(lab)
    check = Checker(lab, tmp_path, MONITOR)
    check.env["CHECK_MAIL_ROUNDTRIP_OAUTH2_CLIENT_SECRET"] = secret
    graph_args = [*legs, "--graph-url", graph.url, "--ca-file", lab.ca_file, "--name", NAME, *source, *options]
    if "imap" in legs or "smtp" in legs:
        check.args += graph_args
    else:
        check.env.pop("CHECK_MAIL_ROUNDTRIP_IMAP_PASSWORD")
        check.args = ["--from", MONITOR, "--state-dir", check.state_dir, *graph_args]
    return check


def subject(message):
    """The decoded Subject of a message of lab.messages() (a long one comes RFC 2047 encoded)."""
    return str(email.header.make_header(email.header.decode_header(message["subject"])))


def probes(lab, folder="INBOX"):
    """Subjects of the probes in *folder* of the monitor mailbox ([] when there is no such folder)."""
    if folder not in ("INBOX", "Junk") and not os.path.isdir(lab.mailboxes.maildir(MONITOR, folder)):
        return []
    return [subject(m) for m in lab.messages(MONITOR, folder) if "MRTP1." in subject(m)]


def wait_probe(lab, n=1, folder="INBOX"):
    lab.wait_for(MONITOR, lambda msgs: len([m for m in msgs if "MRTP1." in subject(m)]) >= n, folder=folder)


def calls(graph):
    """The requests since the last reset, as "METHOD last-path-segments status"."""
    out = []
    for r in graph.requests:
        parts = r["path"].split("/")
        where = "/".join(parts[4:]) if parts[4:5] != ["messages"] or len(parts) < 7 else "messages/ID/" + parts[6]
        out.append("%s %s %s" % (r["method"], where, r["status"]))
    return out


def back(r):
    """The round trip of a run that collected one probe (its status line must be BACK)."""
    m = re.fullmatch(BACK, r.full_line)
    assert r.rc == 0 and m and m.group(1) == m.group(2), r
    return float(m.group(1))


def test_both_legs_by_graph_round_trip_one_connection_removing_only_the_verified_probe(graph, tmp_path):
    lab = graph.lab
    check = graph_checker(graph, tmp_path, "-v")
    forged = "Mail round-trip probe MRTP1.%s.0123456789abcdef.1700000000000.%s" % (profile_key(NAME), "0" * 32)
    lab.send(subject=forged, sender=OTHER)
    lab.send(subject="an ordinary mail", sender=OTHER)
    lab.wait_for(MONITOR, 2)

    r = check(env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert (r.rc, r.full_line) == (0, FIRST), r
    assert sorted(loaded_by(r) & {"imaplib", "imapclient", "smtplib", "poplib", "check_mail_roundtrip.imap",
                                  "check_mail_roundtrip.smtp"}) == []  # no mail protocol is loaded
    assert {"check_mail_roundtrip.graph", "check_mail_roundtrip.graph_send"} <= loaded_by(r)
    assert lab.tokens.count("client_credentials") == 1  # one token for both legs
    assert calls(graph) == ["GET mailFolders/junkemail/messages 200", "GET mailFolders/inbox/messages 200",
                            "GET mailFolders/junkemail/messages 200", "GET mailFolders/inbox/messages 200",
                            "POST sendMail 202"]  # the first run also looks for abandoned probes
    wait_probe(lab, 2)
    (first,) = [s for s in probes(lab) if s != forged]
    graph.reset()

    r = check()
    assert back(r) < 5
    assert re.search(r"^message id \S+ ignored: bad signature \(forged or tampered token\)$", r.stdout, re.M), r.stdout
    assert calls(graph) == ["GET mailFolders/junkemail/messages 200", "GET mailFolders/inbox/messages 200",
                            "POST messages/ID/permanentDelete 204", "POST sendMail 202"]
    assert graph.connections == 1
    prefix = "startswith(subject,'Mail round-trip probe MRTP1.%s')" % profile_key(NAME)
    for listing in graph.requests[:2]:
        query = listing["query"]
        assert re.fullmatch(r"receivedDateTime ge \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ and " + re.escape(prefix),
                            query["$filter"]), query
        assert (query["$select"], query["$orderby"]) == (SELECT, "receivedDateTime desc"), query
    inbox = lab.messages(MONITOR)
    subjects = [subject(m) for m in inbox]
    assert first not in subjects and forged in subjects and "an ordinary mail" in subjects, subjects
    assert all("\\Seen" not in m["flags"] for m in inbox), inbox  # nothing marked read
    assert probes(lab, "Sent") == probes(lab, "Trash") == []  # no copy sent, none deleted to Deleted Items


def test_graphs_certificate_is_verified_like_a_mail_servers(graph, tmp_path):
    lab = graph.lab
    token = tmp_path / "token"
    token.write_text(lab.tokens.access_token("monitor") + "\n")
    token.chmod(0o600)
    base = ["--collect", "graph", "--send", "graph", "--graph-url", graph.url, "--from", MONITOR,
            "--oauth2-token-file", str(token)]
    check = Checker(lab, tmp_path, MONITOR)
    check.args = base + ["--state-dir", check.state_dir]
    r = check()
    untrusted = ("Graph TLS failed: certificate verify failed: unable to get local issuer certificate (a private CA or "
                 "a self-signed certificate? trust it with --ca-file, or skip verification with --insecure)")
    assert (r.rc, r.full_line) == (2, "MAIL_ROUNDTRIP CRITICAL - %s, %s, no probe out yet, 0 in flight | lost=0;;;0 "
                                      "oldest_pending=0.0s;120;600;0 pending=0;;;0" % (untrusted, untrusted)), r
    assert graph.requests == []
    assert check("--ca-file", lab.ca_file).full_line == FIRST


def test_keep_removes_nothing_and_the_next_run_without_it_removes_what_was_kept(graph, tmp_path):
    lab = graph.lab
    check = graph_checker(graph, tmp_path)
    assert check().line == FIRST
    wait_probe(lab)
    r = check("--keep")
    back(r)
    assert not [c for c in calls(graph) if "permanentDelete" in c]
    wait_probe(lab, 2)
    kept = probes(lab)
    assert len(kept) == 2  # the kept one and the one just sent
    graph.reset()
    r = check()
    back(r)
    assert not set(kept) & set(probes(lab)) and len([c for c in calls(graph) if "permanentDelete 204" in c]) == 2


def test_a_probe_filed_as_junk_is_found_in_junkemail_and_no_junk_does_not_look(graph, tmp_path):
    lab = graph.lab
    check = graph_checker(graph, tmp_path)
    lab.junk()
    assert check().line == FIRST
    wait_probe(lab, folder="Junk")
    lab.junk(False)
    graph.reset()
    r = check("--no-junk")
    assert r.rc == 0 and re.fullmatch(
        r"MAIL_ROUNDTRIP OK - no probe back this run, oldest in flight (%s)s, 2 in flight, no success yet \| lost=0;;;0 "
        r"oldest_pending=(%s)s;120;600;0 pending=2;;;0" % (NUM, NUM), r.full_line), r
    assert calls(graph) == ["GET mailFolders/inbox/messages 200", "POST sendMail 202"]
    wait_probe(lab)
    r = check("--junk-state", "critical")
    assert r.rc == 2 and re.fullmatch(
        r"MAIL_ROUNDTRIP CRITICAL - probe delivered to Junk, 2 round trips, slowest (%s)s, 1 in flight, last "
        r"success \d+s ago \| junk=1;;;0 lost=0;;;0 oldest_pending=0\.0s;120;600;0 pending=1;;;0 "
        r"rtt=(%s)s;120;600;0 since_last_success=%ss;;;0" % (NUM, NUM, NUM), r.full_line), r
    assert probes(lab, "Junk") == [] and len(probes(lab)) <= 1


@pytest.mark.parametrize("send, collect", [("smtp", "graph"), ("graph", "imap")])
def test_mixed_legs_a_probe_of_either_sender_verifies_with_either_collector(graph, tmp_path, send, collect):
    lab = graph.lab
    check = graph_checker(graph, tmp_path, legs=("--send", send, "--collect", collect))
    r = check()
    assert (r.rc, r.full_line) == (0, FIRST), r
    wait_probe(lab)
    back(check())
    assert len(probes(lab)) <= 1 and probes(lab, "Sent") == []
    kinds = {c.split()[1].split("/")[0] for c in calls(graph)}
    assert kinds == ({"mailFolders", "messages"} if collect == "graph" else {"sendMail"}), calls(graph)


def test_throttling_waits_out_a_retry_after_that_fits_and_names_one_that_does_not(graph, tmp_path):
    lab = graph.lab
    check = graph_checker(graph, tmp_path, "-t", "10")
    assert check().line == FIRST
    wait_probe(lab)
    graph.reset()
    graph.fault("503", retry_after=1, path_contains="/mailFolders/inbox/")
    r = check()
    back(r)
    assert calls(graph)[:3] == ["GET mailFolders/junkemail/messages 200", "GET mailFolders/inbox/messages 503",
                                "GET mailFolders/inbox/messages 200"]
    assert graph.connections == 1
    graph.fault("429", retry_after=120, path_contains="/mailFolders/inbox/")
    r = check()
    assert r.rc == 2 and re.fullmatch(
        r"MAIL_ROUNDTRIP CRITICAL - Graph list failed: ApplicationThrottled: Application is over its "
        r"MailboxConcurrency limit \(HTTP 429\); Retry-After 120s does not fit in the [1-5]s left \(-t\)"
        + AFTER_FAILED_LIST % (2, 2), r.full_line), r
    assert r.seconds < 10


def test_a_refused_token_is_renewed_once(graph, tmp_path):
    lab = graph.lab
    check = graph_checker(graph, tmp_path)
    assert check().line == FIRST
    wait_probe(lab)
    graph.fault("401", path_contains="/mailFolders/inbox/")
    back(check())
    assert lab.tokens.count("client_credentials") == 2  # the first run's, and the fresh one
    graph.fault("401", times=2, path_contains="/mailFolders/")
    r = check()
    assert r.rc == 2 and re.fullmatch(
        r"MAIL_ROUNDTRIP CRITICAL - Graph list failed: InvalidAuthenticationToken: Lifetime validation failed, "
        r"the token is expired \(HTTP 401\) \(with a fresh token too\)" + AFTER_FAILED_LIST % (2, 2),
        r.full_line), r
    assert lab.tokens.count("client_credentials") == 3


def test_403_names_the_permissions_and_404_the_mailbox_or_the_folder(graph, tmp_path):
    lab = graph.lab
    check = graph_checker(graph, tmp_path, "--graph-user", OTHER)  # the token is the monitor mailbox's
    r = check()
    assert (r.rc, r.line) == (2, (
        "MAIL_ROUNDTRIP CRITICAL - Graph list failed: %s, Graph send failed: %s, no probe out yet, 0 in flight "
        "| lost=0;;;0 oldest_pending=0.0s;120;600;0 pending=0;;;0" % (DENIED, DENIED))), r
    check = graph_checker(graph, tmp_path / "nobody", "--graph-user", "nobody@lab.test")
    r = check("--send", "smtp", "-H", lab.host, "--smtp-port", str(lab.ports["smtp"]))
    assert (r.rc, r.line) == (2, (
        "MAIL_ROUNDTRIP CRITICAL - Graph list failed: mailbox nobody@lab.test not found: ErrorInvalidUser: The "
        "requested user 'nobody@lab.test' is invalid (HTTP 404); --graph-user names it (its user principal name "
        "or id), probe sent, 1 in flight | lost=0;;;0 oldest_pending=0.0s;120;600;0 pending=1;;;0")), r
    check = graph_checker(graph, tmp_path / "nosuchfolder", "--graph-folder", "nosuchfolder", "--no-junk")
    r = check()
    assert r.rc == 2 and r.line.startswith(
        'MAIL_ROUNDTRIP CRITICAL - Graph list failed: folder "nosuchfolder" not found in mailbox monitor@lab.test: '
        "ErrorItemNotFound: "), r
    assert r.line.endswith("; --graph-folder takes a well-known name (inbox, junkemail, ...) or a folder id, "
                           "probe sent, 1 in flight | lost=0;;;0 oldest_pending=0.0s;120;600;0 pending=1;;;0"), r


@pytest.mark.parametrize("kind, words", [
    ("html", r"HTTP 502 Bad Gateway: an HTML page \(502 Bad Gateway\) instead of Graph's JSON \(a proxy or "
             r"gateway in the way\?\)"),
    ("garbage", r"HTTP 200 OK: the answer is not JSON \(application/json\): \? \?\? <<not JSON>> \?\? garbage "
                r"from a broken middlebox \}\{"),
    ("truncated", r"Graph's answer \(HTTP 200\) broke off after (\d+) of (\d+) bytes: the connection closed before "
                  r"the end"),
    ("truncated-complete", r"HTTP 200 OK: Graph's JSON breaks off after \d+ bytes \(answer truncated\)"),
    ("tarpit", r"timed out waiting for Graph's answer to GET /v1\.0/users/monitor@lab\.test/mailFolders/inbox/"
               r"messages"),
])
def test_what_is_not_graphs_json_has_its_own_words_within_the_timeout(graph, tmp_path, kind, words):
    check = graph_checker(graph, tmp_path, "-t", "10")
    assert check().line == FIRST
    graph.fault(kind.split("-")[0], path_contains="/mailFolders/inbox/", seconds=60, complete=kind.endswith("-complete"))
    r = check()
    assert r.rc == 2 and re.fullmatch(r"MAIL_ROUNDTRIP CRITICAL - Graph list failed: " + words
                                      + AFTER_FAILED_FIRST % (2, 2), r.full_line), r
    assert r.seconds < 10 and r.stderr == ""
    assert calls(graph)[-1] == "POST sendMail 202"  # the probe goes out all the same


def test_no_answer_after_sendmail_went_out_leaves_the_probe_in_flight_as_it_may_arrive(graph, tmp_path):
    check = graph_checker(graph, tmp_path, "-t", "5")
    graph.fault("tarpit", path_contains="/sendMail", seconds=60)
    r = check()
    assert (r.rc, r.full_line) == (2, (
        "MAIL_ROUNDTRIP CRITICAL - Graph send failed: no answer after the message went out, outcome unknown: timed "
        "out waiting for Graph's answer to POST /v1.0/users/monitor@lab.test/sendMail, first probe may be out, 1 in "
        "flight | junk=0;;;0 lost=0;;;0 oldest_pending=0.0s;120;600;0 pending=1;;;0")), r
    assert r.seconds < 5


def test_wait_polls_about_once_a_second_until_the_probe_is_back(graph, tmp_path):
    lab = graph.lab
    check = graph_checker(graph, tmp_path, "-v")
    lab.delay(3)
    r = check("--wait", "12", "-t", "30")
    m = re.fullmatch(r"MAIL_ROUNDTRIP OK - round trip (%s)s, 0 in flight, last success 0s ago \| junk=0;;;0 "
                     r"lost=0;;;0 oldest_pending=0\.0s;120;600;0 pending=0;;;0 rtt=(%s)s;120;600;0 "
                     r"since_last_success=%ss;;;0" % (NUM, NUM, NUM), r.full_line)
    assert r.rc == 0 and m and 3 <= float(m.group(1)) < 6, r
    assert re.search(r"^probe \w+ back after waiting (%s)s \(a Graph listing every 1s\)$" % NUM, r.stdout, re.M), r
    looks = [c for c in calls(graph) if c.startswith("GET mailFolders/inbox/")]
    assert 4 <= len(looks) <= 10 and probes(lab) == [], calls(graph)


def test_vvv_traces_each_request_and_status_line_without_the_token(graph, tmp_path):
    check = graph_checker(graph, tmp_path, "-vvv")
    r = check()
    assert r.full_line == FIRST
    trace = [line for line in r.stdout.splitlines() if line.startswith(("Graph ", "Graph:"))]
    assert trace[:3] == ["Graph: connected to 127.0.0.1 port %d" % graph.port, "Graph: TLS established (TLSv1.3)",
                         "Graph C: GET /v1.0/users/monitor@lab.test/mailFolders/junkemail/messages?$filter="
                         "receivedDateTime ge 1900-01-01T00:00:00Z and startswith(subject,'Mail round-trip probe "
                         "MRTP1.%s')&$orderby=receivedDateTime desc&$select=%s&$top=50 HTTP/1.1"
                         % (profile_key(NAME), SELECT)], trace
    assert re.fullmatch(r"Graph S: HTTP/1\.1 200 OK <application/json\S*, \d+ bytes>", trace[3]), trace
    assert re.fullmatch(r"Graph C: POST /v1\.0/users/monitor@lab\.test/sendMail HTTP/1\.1 <body, \d+ bytes>",
                        trace[-2]), trace
    assert trace[-1] == "Graph S: HTTP/1.1 202 Accepted <no content type, 0 bytes>"
    (cache,) = glob.glob(os.path.join(check.state_dir, "oauth2-*.token"))
    with open(cache) as fh:
        token = json.load(fh)["access_token"]
    assert token not in r.stdout + r.stderr


def test_a_steady_state_run_costs_at_most_6_requests_on_one_connection_whatever_the_mailbox_holds(graph, tmp_path):
    lab = graph.lab
    check = graph_checker(graph, tmp_path)
    costs = []
    for others in (0, 5000):
        if others:
            lab.fill(MONITOR, others)
        assert check().rc == 0
        wait_probe(lab)
        graph.reset()
        back(check())
        records = graph.requests
        assert len(records) <= 6 and graph.connections == 1, calls(graph)
        costs.append(sum(r["bytes_in"] + r["bytes_out"] for r in records))
    assert costs[1] <= 1.2 * costs[0], costs


def answer_then_close(answers):
    """A fault server handler: answer *answers* requests on the connection (keep-alive), then close it
    without a word, as a server whose idle timeout ended a kept connection does."""
    def handler(conn):
        for _ in range(answers):
            conn.server.received.append(conn.read_until(b"\r\n\r\n").split(b"\r\n", 1)[0].decode())
            body = b'{"value": []}'
            conn.send(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                      % (len(body), body))
        if not answers:
            conn.read_until(b"\r\n\r\n")
    return handler


def fault_graph(lab, srv, tmp_path):
    token = tmp_path / "token"
    token.write_text("a-token-for-the-fault-server\n")
    token.chmod(0o600)
    return Graph(Endpoint("Graph", "127.0.0.1", srv.port, "tls", MONITOR, ssl_context=lab.ssl_context(),
                          auth="oauth2", oauth2=FileToken(str(token))))


def test_a_kept_connection_the_server_closed_is_opened_again_once_a_fresh_one_closed_is_a_failure(lab, tmp_path):
    tls = fs.server_context(lab.cert_file, lab.key_file)
    with fs.FaultServer(answer_then_close(1), tls=tls) as srv:
        client = fault_graph(lab, srv, tmp_path)
        deadline = Deadline(time.monotonic() + 10)
        assert client.call("Graph list", deadline, "GET", "/v1.0/a").data == {"value": []}
        time.sleep(0.3)  # the server has closed the kept connection meanwhile
        assert client.call("Graph list", deadline, "GET", "/v1.0/b").data == {"value": []}
        assert (client.connections, srv.received) == (2, ["GET /v1.0/a HTTP/1.1", "GET /v1.0/b HTTP/1.1"])
    with fs.FaultServer(answer_then_close(0), tls=tls) as srv:
        client = fault_graph(lab, srv, tmp_path)
        with pytest.raises(Unclear) as failed:
            client.call("Graph send", Deadline(time.monotonic() + 10), "POST", "/v1.0/users/m/sendMail", body=b"{}")
        assert str(failed.value) == ("Graph send failed: Graph closed the connection without an answer to POST "
                                     "/v1.0/users/m/sendMail")
        assert failed.value.handed_over and client.connections == 1


def endless_answer(conn):
    """A fault server handler: a 200 that claims 64 MiB and sends them 1 MiB at a time (until the client goes)."""
    conn.read_until(b"\r\n\r\n")
    conn.send(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n{\"value\": [\""
              % (64 << 20))
    for _ in range(64):
        conn.send(b"x" * (1 << 20))


def test_an_answer_longer_than_8_mib_is_refused_once_that_much_was_read(lab, tmp_path):
    with fs.FaultServer(endless_answer, tls=fs.server_context(lab.cert_file, lab.key_file)) as srv:
        client = fault_graph(lab, srv, tmp_path)
        with pytest.raises(Unclear) as failed:
            client.call("Graph list", Deadline(time.monotonic() + 20), "GET", "/v1.0/x")
        assert str(failed.value) == "Graph list failed: Graph's answer is too long: more than 8 MiB"
        assert client.conn is None  # the connection is dropped, not read to its end
