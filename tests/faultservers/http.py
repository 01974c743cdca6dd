"""The HTTP fault server: http_answer reads one request and sends one scripted answer."""

import re


def http_answer(status, content_type, body, delay=0.0, location=None):
    """An HTTP server that reads one request and answers it with *status*, *content_type*, *body*
    (and a Location header when *location* is given: a redirect); "{body}" in *body* stands for
    the request's body (a server that echoes it)."""
    reason = {200: "OK", 301: "Moved Permanently", 302: "Found", 303: "See Other", 307: "Temporary Redirect",
              308: "Permanent Redirect", 400: "Bad Request", 401: "Unauthorized", 500: "Internal Server Error",
              503: "Service Unavailable"}.get(status, "Status")
    where = b"Location: %s\r\n" % location.encode() if location else b""

    def handler(conn):
        head = conn.read_until(b"\r\n\r\n")
        conn.server.received.append(head.split(b"\r\n", 1)[0].decode("utf-8", "replace"))
        length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        request = conn.read_exactly(int(length.group(1))) if length else b""
        payload = (body.encode("utf-8") if isinstance(body, str) else body).replace(b"{body}", request)
        conn.sleep(delay)
        conn.send(b"HTTP/1.1 %d %s\r\n%sContent-Type: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                  % (status, reason.encode(), where, content_type.encode(), len(payload)) + payload)
        conn.drain()
    return handler
