"""The Graph stand-in's endpoints: one HTTP request in, one Graph v1.0 answer out (no sockets here).

GraphAPI(lab, base_url).handle(Request) answers

    GET    /v1.0/users/{u}/mailFolders[/{f}]
    GET    /v1.0/users/{u}[/mailFolders/{f}]/messages        $filter $orderby $select $top $skip $count
    GET    /v1.0/users/{u}[/mailFolders/{f}]/messages/{id}   $select
    DELETE /v1.0/users/{u}[/mailFolders/{f}]/messages/{id}   204, moved to Deleted Items
    POST   /v1.0/users/{u}[/mailFolders/{f}]/messages/{id}/permanentDelete   204, expunged
    POST   /v1.0/users/{u}/sendMail                          202 (JSON or base64 MIME)

with the lab's Dovecot and Postfix behind it (graph_store.py).  Tokens are
the lab token service's: active by RFC 7662 introspection, bound to one
mailbox, which must be the {u} of the URL (else 403 ErrorAccessDenied, as an
application access policy answers).  A token whose scope names another
resource than Graph is refused as Graph refuses a token of another audience.
At most 4 requests of one app run at once on one mailbox (Outlook's
documented MailboxConcurrency limit); a fifth gets 429.
"""

import base64
import binascii
import collections
import datetime
import email.message
import email.policy
import email.utils
import json
import re
import secrets
import threading
import time
import urllib.parse

from .graph_odata import (
    BODY_PROPERTIES,
    DEFAULT_TOP,
    FOLDER_PROPERTIES,
    LIST_OPTIONS,
    MAX_TOP,
    GraphError,
    bad_request,
    check_efficient,
    check_options,
    filter_values,
    folder_id,
    folder_json,
    folder_name_of,
    matches,
    message_json,
    message_key,
    parse_filter,
    parse_int,
    parse_orderby,
    parse_select,
)
from .graph_store import Mailbox, StoreUnavailable, submit

JSON_TYPE = "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8"
FORM = "application/x-www-form-urlencoded"
MAX_X_HEADERS = 5                 # documented: internetMessageHeaders, at most 5 per message
MAILBOX_CONCURRENCY = 4           # documented: 4 concurrent requests per app per mailbox
MAX_SKIP = 10 ** 7
MAX_KNOWN_TOKENS = 10000
WWW_AUTHENTICATE = ('Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", '
                    'client_id="00000003-0000-0000-c000-000000000000"')
NOT_FOUND = "The specified object was not found in the store."
EPOCH = datetime.datetime(1601, 1, 1, tzinfo=datetime.timezone.utc)


class Request:
    """What the server read: method, path (no query), query {name: value}, headers, body, request_id."""

    def __init__(self, method, path, query, headers, body=b"", request_id=""):
        self.method, self.path, self.query = method, path, query
        self.headers, self.body, self.request_id = headers, body, request_id


class Response:
    def __init__(self, status, body=b"", headers=()):
        self.status, self.body, self.headers = status, body, list(headers)


def json_response(status, payload, headers=()):
    return Response(status, json.dumps(payload).encode(),
                    [("Content-Type", JSON_TYPE), ("OData-Version", "4.0"), *headers])


def error_response(exc, request_id, client_request_id=None):
    """Graph's error body for a GraphError."""
    inner = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"),
             "request-id": request_id, "client-request-id": client_request_id or request_id}
    return json_response(exc.status, {"error": {"code": exc.code, "message": exc.message, "innerError": inner}},
                         exc.headers)


def unauthorized(message):
    return GraphError(401, "InvalidAuthenticationToken", message, [("WWW-Authenticate", WWW_AUTHENTICATE)])


class Tokens:
    """Bearer tokens checked by the lab token service's introspection; an active answer
    is remembered until the token's exp, for when the service cannot be asked (Graph
    checks its JWTs without calling anyone)."""

    def __init__(self, lab):
        self.lab = lab
        self.known = {}
        self.lock = threading.Lock()

    def check(self, header):
        """(mailbox, client_id) of an Authorization header; GraphError 401."""
        scheme, _, token = (header or "").strip().partition(" ")
        token = token.strip()
        if not header:
            raise unauthorized("Access token is empty.")
        if scheme.lower() != "bearer" or not token:
            raise unauthorized("Access token validation failure. Invalid audience.")
        form = urllib.parse.urlencode({"token": token}).encode()
        try:
            status, answer = self.lab.tokens._request("POST", "/introspect", form, {"Content-Type": FORM})
        except Exception:  # noqa: BLE001  (the service is down: what was known still holds)
            status, answer = None, None
        with self.lock:
            if status == 200 and answer.get("active") is True:
                if len(self.known) >= MAX_KNOWN_TOKENS:
                    self.known.clear()
                self.known[token] = answer
            elif status is not None:
                self.known.pop(token, None)
            rec = self.known.get(token)
        if rec is None or time.time() >= rec.get("exp", 0):
            raise unauthorized("Lifetime validation failed, the token is expired." if rec
                               else "Access token validation failure.")
        scope = rec.get("scope") or ""
        if scope and "graph.microsoft.com" not in scope.lower():
            raise unauthorized("Access token validation failure. Invalid audience.")
        return rec.get("username", "").lower(), rec.get("client_id", "")


def _segments(path):
    """The path's segments after /v1.0, percent-decoded; 400 for another version."""
    parts = [urllib.parse.unquote(p) for p in path.split("/")[1:]]
    if not parts or parts[0] != "v1.0":
        raise bad_request("Invalid version: %s" % (parts[0] if parts else ""))
    return [p for p in parts[1:] if p != ""]


def _sort_key(prop):
    def key(values):
        value = values[prop]
        return EPOCH if value is None else value.lower() if isinstance(value, str) else value
    return key


class GraphAPI:
    def __init__(self, lab, base_url):
        self.lab = lab
        self.base_url = base_url
        self.tokens = Tokens(lab)
        self.running = collections.Counter()
        self.lock = threading.Lock()

    # ------------------------------------------------------------ dispatch

    def handle(self, req):
        """The Response to one request (every error in Graph's error shape)."""
        try:
            return self._handle(req)
        except GraphError as exc:
            return error_response(exc, req.request_id, req.headers.get("client-request-id"))

    def _handle(self, req):
        segs = _segments(req.path)
        mailbox, client_id = self.tokens.check(req.headers.get("Authorization"))
        if segs[:1] == ["me"]:
            raise bad_request("/me request is only valid with delegated authentication flow.")
        if len(segs) < 3 or segs[0].lower() != "users":
            raise bad_request("Resource not found for the segment '%s'." % (segs[0] if segs else ""))
        user = self._user(segs[1], mailbox)
        slot = (client_id, user)
        with self.lock:
            if self.running[slot] >= MAILBOX_CONCURRENCY:
                raise GraphError(429, "ApplicationThrottled", "Application is over its MailboxConcurrency limit.",
                                 [("Retry-After", "1")])
            self.running[slot] += 1
        try:
            with Mailbox(self.lab, user) as mbox:
                return self._route(req, user, segs[2:], mbox)
        except StoreUnavailable as exc:
            # the lab's IMAP or SMTP is down: what Exchange answers when its store is (undocumented words)
            raise GraphError(503, "ErrorMailboxStoreUnavailable",
                             "The mailbox database is temporarily unavailable. (%s)" % exc, [("Retry-After", "5")])
        finally:
            with self.lock:
                self.running[slot] -= 1

    def _user(self, name, mailbox):
        """The lab address of {u}: 404 ErrorInvalidUser if there is none, 403 if the token's
        mailbox is another one (the order of the two checks is undocumented)."""
        address = next((u for u in self.lab.users if u.lower() == name.lower()), None)
        if address is None:
            raise GraphError(404, "ErrorInvalidUser", "The requested user '%s' is invalid." % name)
        if address.lower() != mailbox:
            raise GraphError(403, "ErrorAccessDenied",
                             "Access to OData is disabled: [RAOP] : Blocked by tenant configured AppOnly "
                             "AccessPolicy settings.")
        return address

    def _route(self, req, user, rest, mbox):
        method = req.method
        head = rest[0].lower()
        if head == "sendmail" and len(rest) == 1:
            self._allow(method, "POST")
            return self.send_mail(req, user, mbox)
        folder = None
        if head == "mailfolders":
            if len(rest) == 1:
                self._allow(method, "GET")
                return self.list_folders(req, user, mbox)
            folder = self._folder(mbox, rest[1])
            rest = rest[2:]
            if not rest:
                self._allow(method, "GET")
                check_options(req.query, ("$select",))
                select = parse_select(req.query.get("$select"), FOLDER_PROPERTIES, "mailFolder")
                return json_response(200, {"@odata.context": self._context(user, "mailFolders/$entity"),
                                           **folder_json(mbox.counted(folder), select)})
            head = rest[0].lower()
        if head != "messages":
            raise bad_request("Resource not found for the segment '%s'." % rest[0])
        if len(rest) == 1:
            self._allow(method, "GET")
            folders = [folder] if folder else [f for f in mbox.folders() if f.exists]
            return self.list_messages(req, user, mbox, folders, folder)
        key = message_key(rest[1])
        if len(rest) == 2:
            self._allow(method, "GET", "DELETE")
            if method == "GET":
                return self.get_message(req, user, mbox, key)
            return self.delete(mbox, key, permanent=False)
        if len(rest) == 3 and rest[2].lower() == "permanentdelete":
            self._allow(method, "POST")
            return self.delete(mbox, key, permanent=True)
        raise bad_request("Resource not found for the segment '%s'." % rest[2])

    @staticmethod
    def _allow(method, *methods):
        if method not in methods:
            # the wording is undocumented; the status is HTTP's
            raise GraphError(405, "BadRequest", "The HTTP method '%s' is not allowed on this resource." % method)

    def _context(self, user, what):
        return "%s/v1.0/$metadata#users('%s')/%s" % (self.base_url(), urllib.parse.quote(user, safe=""), what)

    @staticmethod
    def _folder(mbox, name):
        """The Folder a URL segment names (a well-known name or a folder id, as in Graph); 404 if none."""
        dovecot_name = folder_name_of(name)
        folder = mbox.folder(name=dovecot_name) if dovecot_name else mbox.folder(well_known=name)
        if folder is None:
            raise GraphError(404, "ErrorItemNotFound", NOT_FOUND)
        return folder

    # -------------------------------------------------------------- folders

    def list_folders(self, req, user, mbox):
        check_options(req.query, ("$select", "$top", "$skip"))
        select = parse_select(req.query.get("$select"), FOLDER_PROPERTIES, "mailFolder")
        top, skip = self._top_skip(req.query)
        folders = mbox.folders()
        items = [folder_json(mbox.counted(f), select) for f in folders[skip:skip + top]]
        return json_response(200, self._collection(req, user, "mailFolders", items, len(folders), top, skip))

    @staticmethod
    def _top_skip(query):
        return (parse_int("$top", query.get("$top"), 1, MAX_TOP) or DEFAULT_TOP,
                parse_int("$skip", query.get("$skip"), 0, MAX_SKIP) or 0)

    def _collection(self, req, user, what, items, total, top, skip, count=False):
        """A collection answer: one page of items, and the @odata.nextLink (a full URL) to the next."""
        answer = {"@odata.context": self._context(user, what)}
        if count:
            answer["@odata.count"] = total
        answer["value"] = items
        if skip + top < total:
            query = {**req.query, "$skip": str(skip + top)}
            answer["@odata.nextLink"] = "%s%s?%s" % (self.base_url(), req.path,
                                                     urllib.parse.urlencode(query, quote_via=urllib.parse.quote))
        return answer

    # ------------------------------------------------------------- messages

    def list_messages(self, req, user, mbox, folders, folder):
        q = req.query
        check_options(q, LIST_OPTIONS)
        filters = parse_filter(q.get("$filter"))
        orderby = parse_orderby(q.get("$orderby"))
        check_efficient(filters, orderby)
        select = parse_select(q.get("$select"))
        top, skip = self._top_skip(q)
        if q.get("$count", "false").lower() not in ("true", "false"):
            raise bad_request("Invalid value for $count: %s" % q["$count"])
        since = [v for p, op, v in filters if p == "receivedDateTime" and op in ("ge", "gt", "eq")]
        words = [v for p, op, v in filters if p == "subject" and op in ("startswith", "eq", "contains")]
        found = []
        for f in folders:
            if not f.exists:
                continue
            uids = mbox.search(f.name, since=max(since) if since else None, subject=words[0] if words else None)
            found += mbox.fetch(f.name, uids, "HEADER.FIELDS (SUBJECT DATE FROM SENDER)")
        rows = [(m, filter_values(m)) for m in found]
        rows = [(m, v) for m, v in rows if matches(filters, v)]
        # without $orderby Exchange lists newest first (undocumented; Outlook's default view);
        # messages received in the same second keep the order they arrived in
        orderby = orderby or [("receivedDateTime", True)]
        rows.sort(key=lambda row: (row[0].folder, row[0].uid), reverse=orderby[0][1])
        for prop, desc in reversed(orderby):
            key = _sort_key(prop)
            rows.sort(key=lambda row, key=key: key(row[1]), reverse=desc)
        page = [m for m, _v in rows[skip:skip + top]]
        wanted = select if select is not None else list(BODY_PROPERTIES)
        part = "" if any(p in BODY_PROPERTIES for p in wanted) else "HEADER"
        full = {}
        for name in {m.folder for m in page}:
            for m in mbox.fetch(name, [p.uid for p in page if p.folder == name], part):
                full[(name, m.uid)] = m
        items = [message_json(full[(m.folder, m.uid)], select, self.base_url(), user)
                 for m in page if (m.folder, m.uid) in full]
        what = "mailFolders('%s')/messages" % (folder.well_known or folder_id(folder.name)) if folder else "messages"
        if select:
            what += "(%s)" % ",".join(select)
        count = q.get("$count", "").lower() == "true"
        return json_response(200, self._collection(req, user, what, items, len(rows), top, skip, count))

    def _message(self, mbox, key, part="HEADER"):
        name, uidvalidity, uid = key
        msg = mbox.get(name, uidvalidity, uid, part)
        if msg is None:
            raise GraphError(404, "ErrorItemNotFound", NOT_FOUND)
        return msg

    def get_message(self, req, user, mbox, key):
        check_options(req.query, ("$select",))
        select = parse_select(req.query.get("$select"))
        wanted = select if select is not None else list(BODY_PROPERTIES)
        msg = self._message(mbox, key, "" if any(p in BODY_PROPERTIES for p in wanted) else "HEADER")
        what = "messages%s/$entity" % ("(%s)" % ",".join(select) if select else "")
        return json_response(200, {"@odata.context": self._context(user, what),
                                   **message_json(msg, select, self.base_url(), user)})

    def delete(self, mbox, key, permanent):
        """permanentDelete: gone (expunged).  DELETE: moved to Deleted Items; one that is in
        Deleted Items already goes (Exchange moves it to Recoverable Items, out of sight)."""
        msg = self._message(mbox, key)
        trash = mbox.well_known("deleteditems")
        if permanent or msg.folder == trash.name:
            mbox.expunge(msg.folder, msg.uid)
        else:
            mbox.move(msg.folder, msg.uid, trash)
        return Response(204)

    # ------------------------------------------------------------- sendMail

    def send_mail(self, req, user, mbox):
        ctype = req.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype == "text/plain":
            data, save = self._mime(req.body), True  # documented: a MIME message is always saved
            data = self._stamp(data)
        else:
            data, save = self._json_mail(req.body, user)
        msg = email.message_from_bytes(data, policy=email.policy.compat32)
        rcpts = [a for _n, a in email.utils.getaddresses(msg.get_all("To", []) + msg.get_all("Cc", [])
                                                          + msg.get_all("Bcc", [])) if a]
        if not rcpts:
            raise GraphError(400, "ErrorInvalidRecipients", "At least one recipient is not valid.")
        sent = re.sub(rb"(?im)^bcc:.*\r?\n(?:[ \t].*\r?\n)*", b"", data, count=1)  # Exchange drops Bcc
        refused = submit(self.lab, user, rcpts, sent)
        if save:
            mbox.append(mbox.well_known("sentitems"), data)
        if refused:
            self._bounce(user, msg.get("Subject", ""), refused)
        return Response(202)

    @staticmethod
    def _mime(body):
        text = re.sub(rb"\s+", b"", body)
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            data = b""
        if not data:
            raise GraphError(400, "ErrorMimeContentInvalidBase64String", "Invalid base64 string for MIME content.")
        return data if data.endswith(b"\n") else data + b"\r\n"

    @staticmethod
    def _stamp(data):
        """A MIME message with the Message-ID and Date Exchange adds when they are missing."""
        head = data.split(b"\n\n", 1)[0].split(b"\r\n\r\n", 1)[0]
        extra = b""
        if not re.search(rb"(?im)^message-id:", head):
            extra += b"Message-ID: <%s@graph.lab.test>\r\n" % secrets.token_hex(16).encode()
        if not re.search(rb"(?im)^date:", head):
            extra += b"Date: %s\r\n" % email.utils.formatdate(localtime=False).encode()
        return extra + data

    def _json_mail(self, body, user):
        """(RFC 5322 bytes, saveToSentItems) of a JSON sendMail body."""
        try:
            payload = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            payload = None
        if not isinstance(payload, dict) or not isinstance(payload.get("message"), dict):
            raise bad_request("Unable to read JSON request payload. Please ensure Content-Type header is set "
                              "and payload is of valid JSON format.")
        save = payload.get("saveToSentItems", True)
        if not isinstance(save, bool):
            raise bad_request("Invalid value for saveToSentItems: a boolean")
        m = payload["message"]
        msg = email.message.EmailMessage(policy=email.policy.SMTP)
        sender = ((m.get("from") or {}).get("emailAddress") or {}).get("address")
        if sender and sender.lower() != user.lower():
            # no Send As right in the lab (the status of this refusal is undocumented)
            raise GraphError(403, "ErrorSendAsDenied", "The user account which was used to submit this request "
                             "does not have the right to send mail on behalf of the specified sending account.")
        msg["From"] = user
        for field, header in (("toRecipients", "To"), ("ccRecipients", "Cc"), ("bccRecipients", "Bcc"),
                              ("replyTo", "Reply-To")):
            addresses = [self._address(r) for r in m.get(field) or []]
            if addresses:
                msg[header] = ", ".join(addresses)
        msg["Subject"] = m.get("subject") or ""
        msg["Date"] = email.utils.formatdate(localtime=False)
        msg["Message-ID"] = "<%s@graph.lab.test>" % secrets.token_hex(16)
        headers = m.get("internetMessageHeaders") or []
        if not isinstance(headers, list):
            raise bad_request("Invalid value for internetMessageHeaders: a list")
        if len(headers) > MAX_X_HEADERS:
            raise GraphError(400, "InvalidInternetMessageHeaderCollection",
                             "Maximum number of headers in one message should be less than or equal to %d."
                             % MAX_X_HEADERS)
        for h in headers:
            name, value = (h.get("name"), h.get("value")) if isinstance(h, dict) else (None, None)
            if not isinstance(name, str) or not isinstance(value, str) or not re.fullmatch(r"[!-9;-~]+", name):
                raise bad_request("Invalid internetMessageHeader: %r" % (h,))
            if not name.lower().startswith("x-"):
                raise GraphError(400, "InvalidInternetMessageHeader",
                                 "The internet message header name '%s' should start with 'x-' or 'X-'." % name)
            if "\r" in value or "\n" in value:
                raise bad_request("Invalid internetMessageHeader value for '%s'" % name)
            msg[name] = value
        body = m.get("body") or {}
        subtype = "html" if str(body.get("contentType", "text")).lower() == "html" else "plain"
        msg.set_content(str(body.get("content", "")), subtype=subtype)
        return msg.as_bytes(), save

    @staticmethod
    def _address(recipient):
        address = ((recipient or {}).get("emailAddress") or {}).get("address") if isinstance(recipient, dict) else None
        if not isinstance(address, str) or not re.fullmatch(r"[^\s@<>,]+@[^\s@<>,]+", address):
            raise GraphError(400, "ErrorInvalidRecipients", "At least one recipient is not valid., Recipient '%s' "
                             "is not resolved. All recipients must be resolved before a message can be submitted."
                             % (address or ""))
        return address

    def _bounce(self, user, subject, refused):
        """A non-delivery report in the sender's Inbox, as Exchange sends one for a recipient its
        transport cannot reach (sendMail itself has answered 202 already)."""
        lines = ["Your message couldn't be delivered to these recipients:", ""]
        lines += ["%s: %s %s" % (r, code, words) for r, (code, words) in sorted(refused.items())]
        try:
            self.lab.postfix.send(to=user, subject="Undeliverable: %s" % subject, body="\n".join(lines) + "\n",
                                  sender="postmaster@%s" % self.lab.domain)
        except OSError:
            pass
