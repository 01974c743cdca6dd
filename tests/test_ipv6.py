"""IPv6 and the address families: -4/-6, IPv6 literals, the next address when one refuses.

Against the lab listening on ::1 (its SMTP port, IMAP and POP3), where the
machine has IPv6 loopback.
"""

import os
import re
import socket
import time

import pytest

from check_mail_roundtrip.budget import Deadline
from check_mail_roundtrip.net import addresses, connect_any
from tests.checkrun import Checker
from tests.lab.common import ipv6_loopback

MONITOR = "monitor@lab.test"


@pytest.fixture
def ipv6():
    if not ipv6_loopback():
        if os.environ.get("CI"):
            pytest.fail("this machine has no IPv6 loopback (::1)")
        pytest.skip("no IPv6 loopback (::1) on this machine")


def _on(lab, tmp_path, host, *extra):
    check = Checker(lab, tmp_path, MONITOR, None, "imaps", "smtp", *extra)
    check.args[check.args.index("-H") + 1] = host
    return check


@pytest.mark.parametrize("host", ["::1", "[::1]"])
def test_round_trip_over_ipv6(lab, tmp_path, ipv6, host):
    check = _on(lab, tmp_path, host, "-6")
    r = check()
    assert r.rc == 0 and r.line.startswith("MAIL_ROUNDTRIP OK - first probe sent"), r
    lab.wait_for(MONITOR, 1)
    r = check("-vvv")
    assert r.rc == 0 and r.line.startswith("MAIL_ROUNDTRIP OK - round trip "), r
    assert re.search(r"^IMAP: connected to ::1 port \d+$", r.stdout, re.M), r.stdout
    assert re.search(r"^SMTP: connected to ::1 port \d+$", r.stdout, re.M), r.stdout


def test_a_literal_of_the_other_family_is_refused_by_name(lab, tmp_path):
    r = _on(lab, tmp_path, "::1", "-4")()
    assert r.rc == 2 and r.line.startswith(
        "MAIL_ROUNDTRIP CRITICAL - IMAP connect failed: ::1 is an IPv6 address, but -4 was given, "
        "SMTP connect failed: ::1 is an IPv6 address, but -4 was given, "), r
    r = _on(lab, tmp_path, "127.0.0.1", "-6")()
    assert r.rc == 2 and "IMAP connect failed: 127.0.0.1 is an IPv4 address, but -6 was given" in r.line, r


def test_ipv4_only_by_name(lab, tmp_path):
    check = _on(lab, tmp_path, "localhost", "-4")
    r = check("-vvv")
    assert r.rc == 0 and "first probe sent" in r.line, r
    assert re.search(r"^IMAP: connected to 127\.0\.0\.1 port", r.stdout, re.M), r.stdout


def test_the_next_address_is_tried_when_one_refuses(ipv6):
    """A server on 127.0.0.1 only; ::1 refuses first, then 127.0.0.1 answers (real sockets)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        tried = []

        def attempt(address):
            tried.append(address)
            return socket.create_connection((address, port), timeout=2)

        with connect_any(["::1", "127.0.0.1"], attempt) as conn:
            assert conn.getpeername()[:2] == ("127.0.0.1", port)
        assert tried == ["::1", "127.0.0.1"]
        with pytest.raises(ConnectionRefusedError):
            connect_any(["::1"], attempt)


def test_addresses_keep_the_resolvers_order_and_family():
    deadline = Deadline(time.monotonic() + 10)
    assert addresses("127.0.0.1", 25, deadline) == ["127.0.0.1"]
    assert addresses("localhost", 25, deadline, "ipv4") == ["127.0.0.1"]
    found = [info[4][0] for info in socket.getaddrinfo("localhost", 25, 0, socket.SOCK_STREAM)]
    assert addresses("localhost", 25, deadline) == list(dict.fromkeys(found))
