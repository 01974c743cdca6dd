"""The system's trust store, read the cheap way: its hashed certificate directory
(one certificate a file, read when a chain asks for it) instead of the bundle of
every CA parsed whole at each run; the bundle where the directory cannot stand in
for it.  Real TLS handshakes on loopback, certificates made by openssl."""

import os
import socket
import ssl
import threading

import pytest

from check_mail_roundtrip import tls
from tests.lab.tls import TLS, link_hashed


class Layout:
    """Where tests.lab.tls.TLS keeps its CA and certificates: under *root*/tls."""

    def __init__(self, root):
        self.root = str(root)

    def p(self, *parts):
        return os.path.join(self.root, *parts)

    @property
    def ca_file(self):
        return self.p("tls", "ca.pem")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA, a certificate for 127.0.0.1, one for another name, and a second CA that signed nothing."""
    root = tmp_path_factory.mktemp("pki")
    made = TLS(Layout(root))
    made.make_ca()
    other = TLS(Layout(root / "other"))
    other.make_ca()
    return {"ca": made.layout.ca_file, "server": (made.layout.p("tls", "server.pem"), made.layout.p("tls", "server.key")),
            "wrong": made.make_cert("wrong.example", ["DNS:wrong.example"], days=1),
            "other_ca": other.layout.ca_file}


def hashed_dir(path, *ca_files):
    """A certificate directory as update-ca-certificates keeps one: each CA under its subject hash."""
    path.mkdir()
    for n, ca in enumerate(ca_files):
        link_hashed(path, ca, "ca-%d.pem" % n)
    return str(path)


@pytest.fixture
def store(monkeypatch):
    """Set the environment OpenSSL reads its defaults from: store(cert_dir=..., cert_file=...)."""
    def set_store(cert_dir=None, cert_file=None):
        for var, value in (("SSL_CERT_DIR", cert_dir), ("SSL_CERT_FILE", cert_file)):
            if value is None:
                monkeypatch.delenv(var, raising=False)
            else:
                monkeypatch.setenv(var, value)
    return set_store


def handshake(ctx, cert, key, host="127.0.0.1"):
    """A TLS handshake of *ctx* (server_hostname *host*) with a loopback server presenting *cert*;
    the client's socket after the handshake (closed), or the SSLError it raised."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)

    def serve():
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        conn.settimeout(10)
        try:
            with server_ctx.wrap_socket(conn, server_side=True) as s:
                s.recv(1)
        except OSError:  # the client gave up on the certificate
            pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        with socket.create_connection(listener.getsockname(), timeout=10) as raw:
            try:
                with ctx.wrap_socket(raw, server_hostname=host) as s:
                    s.getpeercert()
                    return s
            except ssl.SSLError as exc:
                return exc
    finally:
        listener.close()
        t.join(10)


@pytest.mark.parametrize("name, hashed", [
    ("9f240026.0", True), ("002c0b4f.1", True), ("0a1b2c3d.12", True),
    ("ca-certificates.crt", False), ("9F240026.0", False), ("9f24002.0", False), ("9f240026.r0", False),
    ("9f240026", False), ("9f240026.", False), ("9f240026.x", False), ("9f2400g6.0", False), ("9f240026.٣", False)])
def test_a_hashed_name_is_eight_lowercase_hex_digits_a_dot_and_a_number(name, hashed):
    assert tls.is_hashed_name(name) is hashed


def test_a_hashed_directory_stands_in_for_the_store_and_nothing_is_parsed_before_a_chain_asks(tmp_path, pki, store):
    certs = hashed_dir(tmp_path / "certs", pki["other_ca"], pki["ca"])
    store(cert_dir=certs)
    assert tls.system_directory() == certs
    ctx = tls.client_context()
    assert ctx.cert_store_stats()["x509_ca"] == 0  # not one certificate read yet
    assert isinstance(handshake(ctx, *pki["server"]), ssl.SSLSocket)
    assert ctx.cert_store_stats()["x509_ca"] == 1  # only the CA this chain needed


def test_a_hashed_directory_without_the_servers_ca_fails_verification(tmp_path, pki, store):
    store(cert_dir=hashed_dir(tmp_path / "certs", pki["other_ca"]))
    exc = handshake(tls.client_context(), *pki["server"])
    assert isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_code == 20, exc
    assert tls.describe(exc).startswith("certificate verify failed: unable to get local issuer certificate (a private CA")


def test_the_host_name_is_still_checked_and_the_names_are_read_through_the_same_directory(tmp_path, pki, store):
    store(cert_dir=hashed_dir(tmp_path / "certs", pki["ca"]))
    ctx = tls.client_context()
    exc = handshake(ctx, *pki["wrong"])
    assert tls.wrong_name(exc), exc
    sock = handshake(tls.names_only(ctx), *pki["wrong"])
    assert isinstance(sock, ssl.SSLSocket), sock


def test_the_names_context_trusts_what_a_ca_file_trusts(tmp_path, pki, store):
    store(cert_dir=str(tmp_path))  # an empty directory: no system store to lean on
    ctx = tls.client_context(pki["ca"])
    assert isinstance(handshake(tls.names_only(ctx), *pki["wrong"]), ssl.SSLSocket)


def test_a_bundle_of_ones_own_in_ssl_cert_file_is_read_whole_as_before(tmp_path, pki, store):
    certs = hashed_dir(tmp_path / "certs", pki["other_ca"])
    store(cert_dir=certs, cert_file=pki["ca"])
    assert tls.system_directory() is None
    ctx = tls.client_context()
    assert ctx.cert_store_stats()["x509_ca"] == 1
    assert isinstance(handshake(ctx, *pki["server"]), ssl.SSLSocket)


def test_ssl_cert_file_naming_the_default_bundle_keeps_the_directory(tmp_path, pki, store):
    certs = hashed_dir(tmp_path / "certs", pki["ca"])
    store(cert_dir=certs, cert_file=ssl.get_default_verify_paths().openssl_cafile)
    assert tls.system_directory() == certs


@pytest.mark.parametrize("content", ["nothing", "a bundle only", "missing"])
def test_a_directory_without_hashed_names_falls_back_to_the_bundle(tmp_path, pki, store, content):
    certs = tmp_path / "certs"
    if content != "missing":
        certs.mkdir()
    if content == "a bundle only":  # as on Fedora and RHEL
        (certs / "ca-bundle.crt").write_bytes(open(pki["ca"], "rb").read())
    store(cert_dir=str(certs), cert_file=pki["ca"])  # the bundle read instead: ours here
    assert tls.system_directory() is None
    store(cert_dir=str(certs))
    assert tls.system_directory() is None
    assert tls.client_context().cert_store_stats()["x509_ca"] == len(
        ssl.create_default_context().get_ca_certs())  # whatever OpenSSL's default bundle holds


def test_the_look_for_a_hashed_name_is_bounded(tmp_path, pki, store, monkeypatch):
    certs = tmp_path / "certs"
    certs.mkdir()
    for n in range(30):
        (certs / ("plain-%02d.pem" % n)).write_text("")
    hashed_dir(certs / "sub", pki["ca"])  # hashed names one level down do not count
    store(cert_dir=str(certs))
    monkeypatch.setattr(tls, "MAX_DIR_ENTRIES", 10)
    assert tls.system_directory() is None
    os.symlink("plain-00.pem", certs / "0123abcd.0")
    monkeypatch.setattr(tls, "MAX_DIR_ENTRIES", 100)
    assert tls.system_directory() == str(certs)
