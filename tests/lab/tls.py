"""The mail lab's own CA and certificates (openssl), and a client context.

TLS(layout).make_ca() creates tls/ca.pem + ca.key and the servers'
certificate tls/server.pem (CN localhost, SAN IP:127.0.0.1, IP:127.0.0.2, IP:127.0.0.3, IP:::1 and
DNS:localhost); make_cert() signs further ones for tests (other names,
expired ones).  link_hashed() puts a CA in a hashed certificate directory, as
update-ca-certificates does for the system's.
"""

import os
import secrets
import ssl
import time

from .procs import _run, _write


def link_hashed(directory, ca_file, name):
    """Copy *ca_file* into *directory* as *name* and link it under its subject's hash
    (``<hash>.<n>``, the first free n), as update-ca-certificates does; the link's path."""
    directory = str(directory)
    with open(ca_file, "rb") as fh:
        _write(os.path.join(directory, name), fh.read().decode("ascii"))
    digest = _run(["openssl", "x509", "-hash", "-noout", "-in", ca_file]).stdout.strip()
    serial = 0
    while os.path.lexists(os.path.join(directory, "%s.%d" % (digest, serial))):
        serial += 1
    link = os.path.join(directory, "%s.%d" % (digest, serial))
    os.symlink(name, link)
    return link


class TLS:
    def __init__(self, layout):
        self.layout = layout

    def _openssl(self, *args):
        return _run(["openssl", *args], cwd=self.layout.p("tls"))

    def make_ca(self):
        """A fresh CA and the servers' certificate (server.pem, server.key)."""
        p = self.layout.p
        tls = p("tls")
        os.makedirs(tls, exist_ok=True)
        os.chmod(tls, 0o755)
        ca_ext = ("basicConstraints=critical,CA:TRUE\n"
                  "keyUsage=critical,keyCertSign,cRLSign\n"
                  "subjectKeyIdentifier=hash\n")
        _write(p("tls", "ca.ext"), ca_ext)
        self._openssl("req", "-x509", "-new", "-newkey", "ec", "-pkeyopt",
                      "ec_paramgen_curve:prime256v1", "-nodes", "-sha256",
                      "-keyout", "ca.key", "-out", "ca.pem", "-days", "3650",
                      "-subj", "/O=check_mail_roundtrip lab/CN=Mail Lab CA %s"
                      % secrets.token_hex(4),
                      "-addext", "basicConstraints=critical,CA:TRUE",
                      "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                      "-addext", "subjectKeyIdentifier=hash")
        _write(p("tls", "ca.cnf"), (
            "[ca]\ndefault_ca = lab\n"
            "[lab]\ndir = %s\ndatabase = $dir/index.txt\nserial = $dir/serial\n"
            "new_certs_dir = $dir/issued\ncertificate = $dir/ca.pem\n"
            "private_key = $dir/ca.key\ndefault_md = sha256\npolicy = any\n"
            "unique_subject = no\ncopy_extensions = none\nemail_in_dn = no\n"
            "[any]\ncommonName = supplied\norganizationName = optional\n") % tls)
        os.makedirs(p("tls", "issued"), exist_ok=True)
        _write(p("tls", "index.txt"), "")
        _write(p("tls", "serial"), "%s\n" % secrets.token_hex(8).upper())
        cert, key = self.make_cert("localhost", ["IP:127.0.0.1", "IP:127.0.0.2", "IP:127.0.0.3", "IP:::1", "DNS:localhost"],
                                   days=3650, name="server")
        os.chmod(key, 0o600)

    def make_cert(self, cn, san_list=(), days=30, expired=False, name=None):
        """A certificate signed by the lab CA: returns (cert_path, key_path).

        san_list: e.g. ["DNS:localhost", "IP:127.0.0.1"]; expired=True makes
        one whose validity ended yesterday.
        """
        p = self.layout.p
        name = name or "cert-%s" % secrets.token_hex(4)
        key = p("tls", name + ".key")
        csr = p("tls", name + ".csr")
        cert = p("tls", name + ".pem")
        ext = p("tls", name + ".ext")
        lines = ["basicConstraints=critical,CA:FALSE",
                 "keyUsage=critical,digitalSignature,keyEncipherment",
                 "extendedKeyUsage=serverAuth",
                 "subjectKeyIdentifier=hash",
                 "authorityKeyIdentifier=keyid"]
        if san_list:
            lines.append("subjectAltName=" + ",".join(san_list))
        _write(ext, "\n".join(lines) + "\n")
        self._openssl("req", "-new", "-newkey", "ec", "-pkeyopt",
                      "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key,
                      "-out", csr, "-subj", "/CN=%s" % cn)
        now = time.time()
        if expired:
            start, end = now - 30 * 86400, now - 86400
        else:
            start, end = now - 3600, now + days * 86400
        fmt = lambda t: time.strftime("%Y%m%d%H%M%SZ", time.gmtime(t))  # noqa: E731
        self._openssl("ca", "-batch", "-config", "ca.cnf", "-notext", "-in", csr,
                      "-out", cert, "-extfile", ext, "-startdate", fmt(start),
                      "-enddate", fmt(end))
        os.chmod(key, 0o644)  # test certs: readable by the daemons' users
        return cert, key

    def ssl_context(self):
        """A client SSLContext that verifies against the lab CA."""
        return ssl.create_default_context(cafile=self.layout.ca_file)
