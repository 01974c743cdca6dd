"""Two private Icinga 2 endpoints on loopback in one HA zone.

    cluster = IcingaCluster(objects_text, plugin_dir, includes=[command_file])
    with cluster:                        # certificates, then both endpoints started
        cluster.nodes[0].end()           # stop one: the other takes over its checks
        cluster.nodes[0].start()         # and back

Each endpoint is an :class:`icinga.Icinga` in its own temporary directory,
with NodeName set on its command line, an ApiListener on a free loopback
port, and the zone "master" holding both endpoints; the objects are the same
on both (give them ``zone = "master"``: the endpoints then share their
checks, and one takes over what the other ran when it stops).  The
certificates come from ``icinga2 pki``: a CA made with ``pki new-ca`` in a
directory of its own, and for each endpoint a key and CSR from
``pki new-cert``, signed by ``pki sign-csr``, put into the endpoint's
DataDir/certs as Icinga expects them.
"""

import os
import pwd
import shutil
import socket
import tempfile

from . import daemon
from .icinga import ICINGA2, RUN_AS, Icinga, install, string
from .lab import LabError, _run

ZONE = "master"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pki(*args):
    res = _run([ICINGA2, "pki", *args], check=False, timeout=60, env=daemon.clean_env())
    if res.returncode != 0:
        raise LabError("icinga2 pki %s failed:\n%s" % (args[0], (res.stdout + res.stderr)[-2000:]))


def _give(path, mode):
    nagios = pwd.getpwnam(RUN_AS)
    os.chown(path, nagios.pw_uid, nagios.pw_gid)
    os.chmod(path, mode)


class ClusterNode(Icinga):
    """One endpoint of the zone: the private Icinga with the cluster around it."""

    PREFIX = "cmr-icinga-node-"

    def __init__(self, name, port, endpoints, objects, plugin_dir, includes, certificates):
        super().__init__(objects, plugin_dir, includes=includes)
        self.name = name
        self.port = port
        self.endpoints = endpoints          # {name: port} of every endpoint of the zone
        self.certificates = certificates    # (key, certificate, CA certificate) paths

    def _main_conf(self):
        parts = [super()._main_conf()]
        for name, port in sorted(self.endpoints.items()):
            parts.append('object Endpoint %s {\n    host = "127.0.0.1"\n    port = %d\n}' % (string(name), port))
        parts.append("object Zone %s {\n    endpoints = [ %s ]\n}"
                     % (string(ZONE), ", ".join(string(n) for n in sorted(self.endpoints))))
        parts.append('object ApiListener "api" {\n    bind_host = "127.0.0.1"\n    bind_port = %d\n'
                     '    accept_commands = true\n}' % self.port)
        return "\n".join(parts) + "\n"

    def _write_config(self):
        super()._write_config()
        certs = self._p("data", "certs")
        os.makedirs(certs, exist_ok=True)
        _give(certs, 0o700)
        key, cert, ca = self.certificates
        for source, target, mode in ((key, self.name + ".key", 0o600), (cert, self.name + ".crt", 0o644),
                                     (ca, "ca.crt", 0o644)):
            shutil.copyfile(source, os.path.join(certs, target))
            _give(os.path.join(certs, target), mode)

    def command(self, *extra):
        return super().command("-DNodeName=%s" % self.name, *extra)


class IcingaCluster:
    """Two endpoints (names *names*) in the HA zone "master", started together."""

    def __init__(self, objects, plugin_dir, includes=(), names=("e1.lab.test", "e2.lab.test")):
        install()
        self.dir = tempfile.mkdtemp(prefix="cmr-icinga-ca-")
        os.chmod(self.dir, 0o755)
        _give(self.dir, 0o755)  # icinga2 pki drops to nagios too
        ports = {name: free_port() for name in names}
        self.nodes = []
        try:
            ca_data = os.path.join(self.dir, "data")
            os.makedirs(ca_data)
            _give(ca_data, 0o700)
            _pki("new-ca", "-DConfiguration.DataDir=" + ca_data)
            for name in names:
                key, csr, cert = (os.path.join(self.dir, name + ext) for ext in (".key", ".csr", ".crt"))
                _pki("new-cert", "--cn", name, "--key", key, "--csr", csr)
                _pki("sign-csr", "--csr", csr, "--cert", cert, "-DConfiguration.DataDir=" + ca_data)
                self.nodes.append(ClusterNode(name, ports[name], ports, objects, plugin_dir, includes,
                                              (key, cert, os.path.join(ca_data, "ca", "ca.crt"))))
        except BaseException:
            self.stop()
            raise

    def start(self):
        try:
            for node in self.nodes:
                node.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self):
        for node in self.nodes:
            node.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False
