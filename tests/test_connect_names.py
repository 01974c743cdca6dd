"""A connection that a name or an address refuses names the server and port in
the status line: the admin sees at once which setting to look at."""

import errno
import socket
import time

import pytest

from check_mail_roundtrip import net
from check_mail_roundtrip.budget import Deadline
from check_mail_roundtrip.failure import StepFailure, step
from tests import faultservers as fs


def plain_connect(address, port):
    def attempt(addr):
        return socket.create_connection((addr, port), timeout=2)
    return attempt


def connect_step(name, host, port, attempt=None):
    deadline = Deadline(time.monotonic() + 5)
    with step(name, deadline):
        return net.connect(host, port, deadline, None, attempt or plain_connect(host, port))


def test_a_refused_connection_names_host_and_port():
    port = fs.free_port()
    with pytest.raises(StepFailure) as info:
        connect_step("IMAP connect", "127.0.0.1", port)
    assert str(info.value) == "IMAP connect to 127.0.0.1:%d failed: connection refused" % port


def test_an_ipv6_address_is_bracketed():
    port = fs.free_port()
    with pytest.raises(StepFailure) as info:
        connect_step("POP3 connect", "::1", port)
    assert str(info.value) == "POP3 connect to [::1]:%d failed: connection refused" % port


def test_an_unresolvable_name_names_host_and_port(monkeypatch):
    def no_such_name(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    monkeypatch.setattr(socket, "getaddrinfo", no_such_name)
    with pytest.raises(StepFailure) as info:
        connect_step("SMTP connect", "mail.example.org", 25)
    assert str(info.value) == ("SMTP connect to mail.example.org:25 failed: "
                               "cannot resolve host name: Name or service not known")


def test_a_failure_after_the_connection_keeps_the_plain_step_name():
    def reset(address):
        raise ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")
    with pytest.raises(StepFailure) as info:
        connect_step("IMAP connect", "127.0.0.1", 993, reset)
    assert str(info.value) == "IMAP connect failed: connection reset by peer"


def test_every_address_refusing_names_the_host_asked_for(monkeypatch):
    port = fs.free_port()
    monkeypatch.setattr(net, "addresses", lambda host, port, deadline, family=None: ["127.0.0.1", "127.0.0.1"])
    with pytest.raises(StepFailure) as info:
        connect_step("IMAP connect", "mail.example.org", port, plain_connect("127.0.0.1", port))
    assert str(info.value) == "IMAP connect to mail.example.org:%d failed: connection refused" % port
