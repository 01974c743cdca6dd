"""The Graph stand-in's OData side: query options, ids, dates and the JSON shapes Microsoft documents.

Nothing here talks to a server.  GraphError is an answer in Graph's error
shape; parse_list_query reads $filter, $orderby, $select, $top and $skip of a
message listing (with Exchange's InefficientFilter rule); message_json and
folder_json build the resources from what IMAP gave.

Documented behaviour followed here (Microsoft Graph v1.0):
- list messages: default page size 10, $top 1..1000, @odata.nextLink a full URL;
- $filter/$orderby: Exchange refuses (400 InefficientFilter) a request whose
  $orderby properties are not the first properties of $filter, in that order;
- internetMessageHeaders is returned only when $select names it;
- dates are UTC ISO 8601 with "Z"; every entity has "@odata.etag" and "id".
Where the documentation is silent the choice is marked "undocumented" below.
"""

import base64
import binascii
import datetime
import email.header
import email.utils
import hashlib
import re
import urllib.parse

DEFAULT_TOP = 10
MAX_TOP = 1000
MAX_FILTER = 2000            # characters of $filter the stand-in reads (undocumented bound)
MAX_CLAUSES = 10
PREVIEW_CHARS = 255          # bodyPreview: "the first 255 characters of the message body"
FOLDER_PREFIX = "AQMkAD"     # ids look like Exchange's (base64), and are opaque to clients
MESSAGE_PREFIX = "AAMkAG"

# message properties (Graph v1.0 message resource) the stand-in serves, in Graph's order
MESSAGE_PROPERTIES = (
    "createdDateTime", "lastModifiedDateTime", "changeKey", "categories", "receivedDateTime",
    "sentDateTime", "hasAttachments", "internetMessageId", "subject", "bodyPreview", "importance",
    "parentFolderId", "conversationId", "conversationIndex", "isDeliveryReceiptRequested",
    "isReadReceiptRequested", "isRead", "isDraft", "webLink", "inferenceClassification", "body",
    "sender", "from", "toRecipients", "ccRecipients", "bccRecipients", "replyTo", "flag",
    "internetMessageHeaders", "uniqueBody")
# returned only when $select names them (documented for internetMessageHeaders and uniqueBody)
SELECT_ONLY = ("internetMessageHeaders", "uniqueBody")
# properties that need the message's body, not only its header
BODY_PROPERTIES = ("body", "bodyPreview", "uniqueBody", "hasAttachments")
# properties $filter and $orderby understand here
FILTER_PROPERTIES = {"receiveddatetime": "receivedDateTime", "sentdatetime": "sentDateTime",
                     "subject": "subject", "isread": "isRead",
                     "from/emailaddress/address": "from/emailAddress/address"}
ORDER_PROPERTIES = ("receivedDateTime", "sentDateTime", "subject")
OPERATORS = ("eq", "ne", "gt", "ge", "lt", "le")


class GraphError(Exception):
    """An answer in Graph's error shape: status, error.code, error.message (and extra headers)."""

    def __init__(self, status, code, message, headers=()):
        super().__init__("%s %s: %s" % (status, code, message))
        self.status, self.code, self.message, self.headers = status, code, message, list(headers)


def bad_request(message, code="BadRequest"):
    return GraphError(400, code, message)


# ------------------------------------------------------------------ dates


def iso(when):
    """A datetime as Graph writes it: UTC, whole seconds, "Z"."""
    return when.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text):
    """An OData DateTimeOffset literal (2026-01-01T00:00:00Z, with fractions or an offset)."""
    m = re.fullmatch(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d)(?::(\d\d)(\.\d{1,7})?)?(Z|[+-]\d\d:\d\d)", text)
    if not m:
        raise bad_request("Invalid filter clause: the date %r is not an ISO 8601 DateTimeOffset" % text)
    year, month, day, hour, minute = (int(m.group(i)) for i in range(1, 6))
    second = int(m.group(6) or 0)
    micro = int((m.group(7) or ".0")[1:7].ljust(6, "0"))
    zone = m.group(8)
    offset = datetime.timedelta(0) if zone == "Z" else (
        (1 if zone[0] == "+" else -1) * datetime.timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])))
    try:
        return datetime.datetime(year, month, day, hour, minute, second, micro,
                                 tzinfo=datetime.timezone(offset))
    except ValueError:
        raise bad_request("Invalid filter clause: the date %r does not exist" % text)


# ------------------------------------------------------------------ ids


def _b64(text):
    return base64.urlsafe_b64encode(text.encode()).decode()


def _unb64(text):
    try:
        return base64.urlsafe_b64decode(text.encode("ascii")).decode()
    except (ValueError, binascii.Error, UnicodeError):
        return None


def folder_id(name):
    """The opaque id of the IMAP folder *name*."""
    return FOLDER_PREFIX + _b64("folder\0" + name)


def folder_name_of(fid):
    """The IMAP folder of a folder id (None: not one of ours)."""
    if not fid.startswith(FOLDER_PREFIX):
        return None
    text = _unb64(fid[len(FOLDER_PREFIX):])
    if not text or not text.startswith("folder\0"):
        return None
    return text[len("folder\0"):]


def message_id(folder, uidvalidity, uid):
    """The opaque id of a message (changes when it moves, as Exchange's default ids do)."""
    return MESSAGE_PREFIX + _b64("%s\0%d\0%d" % (folder, uidvalidity, uid))


def message_key(mid):
    """(folder, uidvalidity, uid) of a message id; GraphError 400 ErrorInvalidIdMalformed."""
    text = _unb64(mid[len(MESSAGE_PREFIX):]) if mid.startswith(MESSAGE_PREFIX) else None
    parts = text.split("\0") if text else []
    if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
        raise GraphError(400, "ErrorInvalidIdMalformed", "Id is malformed.")
    return parts[0], int(parts[1]), int(parts[2])


# ---------------------------------------------------------------- $filter


def _split_and(text):
    """The clauses of a $filter joined by "and" (outside quotes); "or", "not" and
    parentheses around clauses are not understood by the stand-in."""
    clauses, start, i, quoted = [], 0, 0, False
    lower = text.lower()
    while i < len(text):
        ch = text[i]
        if ch == "'":
            if quoted and text[i + 1:i + 2] == "'":
                i += 2
                continue
            quoted = not quoted
        elif not quoted and lower.startswith(" and ", i):
            clauses.append(text[start:i].strip())
            start = i = i + 5
            continue
        elif not quoted and (lower.startswith(" or ", i) or lower.startswith("not ", i)):
            raise bad_request("Invalid filter clause: the mail stand-in understands clauses joined by 'and' only")
        i += 1
    if quoted:
        raise bad_request("Invalid filter clause: unterminated string literal")
    clauses.append(text[start:].strip())
    return clauses


def _string(literal):
    if len(literal) < 2 or literal[0] != "'" or literal[-1] != "'":
        raise bad_request("Invalid filter clause: %s is not a string literal" % literal)
    body = literal[1:-1]
    if re.search(r"(?<!')'(?!')", body.replace("''", "")):
        raise bad_request("Invalid filter clause: %s" % literal)
    return body.replace("''", "'")


def _property(name):
    prop = FILTER_PROPERTIES.get(name.strip().lower())
    if prop is None:
        raise bad_request("Could not find a property named '%s' on type 'microsoft.graph.message'."
                          % name.strip(), code="RequestBroker--ParseUri")
    return prop


def _clause(text):
    """(property, operator, value) of one clause."""
    m = re.fullmatch(r"(?i)(startswith|endswith|contains)\(\s*([\w/]+)\s*,\s*('.*')\s*\)", text)
    if m:
        prop = _property(m.group(2))
        if prop != "subject" and prop != "from/emailAddress/address":
            raise bad_request("Invalid filter clause: %s() on %s" % (m.group(1), prop))
        return prop, m.group(1).lower(), _string(m.group(3))
    m = re.fullmatch(r"(?i)([\w/]+)\s+(eq|ne|gt|ge|lt|le)\s+(.+)", text)
    if not m:
        raise bad_request("Invalid filter clause: %s" % text)
    prop, op, value = _property(m.group(1)), m.group(2).lower(), m.group(3).strip()
    if prop.endswith("DateTime"):
        return prop, op, parse_iso(value)
    if prop == "isRead":
        if value.lower() not in ("true", "false"):
            raise bad_request("Invalid filter clause: isRead takes true or false")
        return prop, op, value.lower() == "true"
    if op not in ("eq", "ne"):
        raise bad_request("Invalid filter clause: %s %s on a string" % (prop, op))
    return prop, op, _string(value)


def parse_filter(text):
    """[(property, operator, value)] of a $filter ("" or None: no filter)."""
    if not text:
        return []
    if len(text) > MAX_FILTER:
        raise bad_request("Invalid filter clause: longer than %d characters" % MAX_FILTER)
    clauses = [c for c in _split_and(text.strip())]
    if len(clauses) > MAX_CLAUSES or not all(clauses):
        raise bad_request("Invalid filter clause: %s" % text)
    return [_clause(c) for c in clauses]


def _compare(have, op, want):
    if have is None:
        return op == "ne"
    if op in ("startswith", "endswith", "contains"):
        have, want = have.lower(), want.lower()
        return {"startswith": have.startswith, "endswith": have.endswith,
                "contains": lambda w: w in have}[op](want)
    if isinstance(have, str):
        have, want = have.lower(), want.lower()  # Exchange compares strings without case
    return {"eq": have == want, "ne": have != want, "gt": have > want, "ge": have >= want,
            "lt": have < want, "le": have <= want}[op]


def matches(filters, values):
    """Does a message with *values* ({property: value}) pass every clause?"""
    return all(_compare(values.get(prop), op, want) for prop, op, want in filters)


# --------------------------------------------------------------- $orderby


def parse_orderby(text):
    """[(property, descending)] of an $orderby."""
    out = []
    for part in (text or "").split(","):
        if not part.strip():
            continue
        words = part.split()
        prop = FILTER_PROPERTIES.get(words[0].lower())
        if prop not in ORDER_PROPERTIES or len(words) > 2 or (
                len(words) == 2 and words[1].lower() not in ("asc", "desc")):
            raise bad_request("Invalid $orderby: %s (the stand-in orders by %s)"
                              % (part.strip(), ", ".join(ORDER_PROPERTIES)))
        out.append((prop, len(words) == 2 and words[1].lower() == "desc"))
    return out


def check_efficient(filters, orderby):
    """Exchange's rule: with both $filter and $orderby, the ordered properties must
    come first in $filter, in the same order (else 400 InefficientFilter)."""
    if not filters or not orderby:
        return
    first = [prop for prop, _op, _value in filters[:len(orderby)]]
    if first != [prop for prop, _desc in orderby]:
        raise GraphError(400, "InefficientFilter",
                         "The restriction or sort order is too complex for this operation.")


# ----------------------------------------------------------------- $select


def parse_select(text, known=MESSAGE_PROPERTIES, type_name="message"):
    """The properties a $select names, in Graph's spelling (None: no $select)."""
    if text is None:
        return None
    spelled = {p.lower(): p for p in known + ("id",)}
    out = []
    for name in text.split(","):
        name = name.strip()
        if not name:
            continue
        if name.lower() not in spelled:
            raise bad_request("Could not find a property named '%s' on type 'microsoft.graph.%s'."
                              % (name, type_name), code="RequestBroker--ParseUri")
        if spelled[name.lower()] not in out:
            out.append(spelled[name.lower()])
    return out


def parse_int(name, text, low, high):
    """$top and $skip: whole numbers in [low, high] (the error's wording is undocumented)."""
    if text is None:
        return None
    if not re.fullmatch(r"\d{1,9}", text) or not low <= int(text) <= high:
        raise bad_request("Invalid value '%s' for query option %s: a whole number from %d to %d"
                          % (text, name, low, high))
    return int(text)


LIST_OPTIONS = ("$filter", "$orderby", "$select", "$top", "$skip", "$count")


def check_options(query, allowed):
    """400 for a $-option this request does not take (e.g. $search, $expand here)."""
    for name in query:
        if name.startswith("$") and name not in allowed:
            raise bad_request("Query option '%s' is not allowed on this request." % name)
    if "$search" in query and "$filter" in query:  # documented: they cannot be combined
        raise bad_request("Query option '$search' cannot be combined with '$filter'.")


# ----------------------------------------------------------------- JSON


def _decoded(value):
    """A header value as text (RFC 2047 words decoded), unfolded."""
    if value is None:
        return None
    try:
        text = str(email.header.make_header(email.header.decode_header(str(value))))
    except (ValueError, LookupError, UnicodeError):
        text = str(value)
    return re.sub(r"\r?\n[ \t]+", " ", text).strip()


def recipients(value):
    """[{"emailAddress": {"name", "address"}}] of an address header."""
    if not value:
        return []
    out = []
    for name, address in email.utils.getaddresses([_decoded(value)]):
        if address:
            out.append({"emailAddress": {"name": name or address, "address": address}})
    return out


def _text_body(msg):
    """(contentType "text"/"html", content, has attachments) of a parsed message."""
    part = None
    attachments = False
    for sub in msg.walk():
        if sub.is_multipart():
            continue
        if sub.get_content_disposition() == "attachment":
            attachments = True
            continue
        if part is None and sub.get_content_type() in ("text/plain", "text/html"):
            part = sub
    if part is None:
        return "text", "", attachments
    payload = part.get_payload(decode=True) or b""
    charset = part.get_content_charset() or "us-ascii"
    try:
        content = payload.decode(charset, "replace")
    except LookupError:
        content = payload.decode("latin-1")
    return ("html" if part.get_content_type() == "text/html" else "text"), content, attachments


def sent_date(msg):
    """The Date header as an aware datetime (None: none, or not a date)."""
    try:
        sent = email.utils.parsedate_to_datetime(msg["Date"]) if msg["Date"] else None
    except (TypeError, ValueError):
        return None
    if sent is not None and sent.tzinfo is None:
        sent = sent.replace(tzinfo=datetime.timezone.utc)
    return sent


def change_key(folder, uid, flags):
    return base64.b64encode(hashlib.sha256(("%s/%d/%s" % (folder, uid, sorted(flags))).encode())
                            .digest()[:16]).decode()


def message_json(info, select, base_url, user):
    """The message resource of *info* (graph_store.Message with .parsed), with only
    the $select'ed properties (plus id and @odata.etag, as Graph always sends)."""
    msg = info.parsed
    key = change_key(info.folder, info.uid, info.flags)
    wanted = [p for p in MESSAGE_PROPERTIES if p not in SELECT_ONLY] if select is None else select
    props = {}

    def put(name, fn):
        if name in wanted:
            props[name] = fn()

    received = iso(info.internaldate)
    mid = message_id(info.folder, info.uidvalidity, info.uid)
    sent = sent_date(msg)
    if any(p in wanted for p in BODY_PROPERTIES):
        content_type, content, attachments = _text_body(msg)
    else:
        content_type, content, attachments = "text", "", False
    sender = recipients(msg["Sender"] or msg["From"])
    put("createdDateTime", lambda: received)
    put("lastModifiedDateTime", lambda: received)
    put("changeKey", lambda: key)
    put("categories", lambda: [])
    put("receivedDateTime", lambda: received)
    put("sentDateTime", lambda: iso(sent) if sent else received)
    put("hasAttachments", lambda: attachments)
    put("internetMessageId", lambda: _decoded(msg["Message-ID"]))
    put("subject", lambda: _decoded(msg["Subject"]) or "")
    put("bodyPreview", lambda: re.sub(r"\s+", " ", re.sub(r"<[^>]*>", " ", content)).strip()[:PREVIEW_CHARS])
    put("importance", lambda: "normal")
    put("parentFolderId", lambda: folder_id(info.folder))
    put("conversationId", lambda: "AAQk" + base64.urlsafe_b64encode(
        hashlib.sha256((_decoded(msg["Subject"]) or "").encode()).digest()[:12]).decode())
    put("conversationIndex", lambda: base64.b64encode(hashlib.sha256(mid.encode()).digest()[:22]).decode())
    put("isDeliveryReceiptRequested", lambda: False)
    put("isReadReceiptRequested", lambda: bool(msg["Disposition-Notification-To"]))
    put("isRead", lambda: "\\Seen" in info.flags)
    put("isDraft", lambda: "\\Draft" in info.flags)
    put("webLink", lambda: "https://outlook.office365.com/owa/?ItemID=%s&exvsurl=1&viewmodel=ReadMessageItem"
        % urllib.parse.quote(mid, safe=""))
    put("inferenceClassification", lambda: "focused")
    put("body", lambda: {"contentType": content_type, "content": content})
    put("sender", lambda: sender[0] if sender else None)
    put("from", lambda: (recipients(msg["From"]) or [None])[0])
    put("toRecipients", lambda: recipients(msg["To"]))
    put("ccRecipients", lambda: recipients(msg["Cc"]))
    put("bccRecipients", lambda: recipients(msg["Bcc"]))
    put("replyTo", lambda: recipients(msg["Reply-To"]))
    put("flag", lambda: {"flagStatus": "flagged" if "\\Flagged" in info.flags else "notFlagged"})
    put("internetMessageHeaders", lambda: [{"name": k, "value": _decoded(v)} for k, v in msg.raw_items()])
    put("uniqueBody", lambda: {"contentType": content_type, "content": content})
    return {"@odata.etag": 'W/"%s"' % key, "id": mid, **props}


def filter_values(info):
    """{property: value} of a message for $filter and $orderby."""
    msg = info.parsed
    sender = recipients(msg["From"])
    return {"receivedDateTime": info.internaldate, "sentDateTime": sent_date(msg),
            "subject": _decoded(msg["Subject"]) or "", "isRead": "\\Seen" in info.flags,
            "from/emailAddress/address": sender[0]["emailAddress"]["address"] if sender else None}


FOLDER_PROPERTIES = ("displayName", "parentFolderId", "childFolderCount", "unreadItemCount",
                     "totalItemCount", "sizeInBytes", "isHidden")


def folder_json(folder, select=None):
    """The mailFolder resource of a graph_store.Folder."""
    props = {"id": folder_id(folder.name), "displayName": folder.display_name,
             "parentFolderId": FOLDER_PREFIX + _b64("root"), "childFolderCount": 0,
             "unreadItemCount": folder.unread, "totalItemCount": folder.total,
             "sizeInBytes": folder.size, "isHidden": False}
    if select is None:
        return props
    return {k: v for k, v in props.items() if k == "id" or k in select}
