"""DKIM, SPF and DMARC for the relay lab: OpenDKIM signing on mx1, and OpenDKIM verifying,
OpenDMARC and policyd-spf on the lab Postfix's listener for mx1, with no real DNS.

    checks = AuthChecks(dir).start()      # keys, a DNS server, three milters
    checks.signer_port                    # mx1's smtpd_milters
    checks.listener_options()             # master.cf lines for the lab's listener
    checks.break_dkim(); checks.fix_dkim()
    checks.stop()

Everything lives in *dir* (the relay lab's auth/ folder):

    lab.private, lab.txt   the DKIM key of lab.test, selector "lab" (opendkim-genkey, 2048 bits)
    wrong.private, .txt    another key, made by the first break_dkim()
    signer.conf, keytable, signingtable
                           the signer: Mode s, every mail from *@lab.test signed with
                           relaxed/simple (loopback clients are its InternalHosts)
    verifier.conf, testdns.txt
                           the verifier: Mode v, AuthservID mail.lab.test, keys from
                           testdns.txt (TestDNSData) instead of DNS, an Authentication-Results
                           field on every mail
    lab.zone, resolv.conf  a DNS server (python3-dnslib's zoneresolver) on 127.53.x.y:53 that
                           serves lab.test's SPF record "v=spf1 ip4:127.0.0.0/8 -all" and its
                           DMARC record "v=DMARC1; p=reject"
    opendmarc.conf, ignore-hosts
                           OpenDMARC (AuthservID and TrustedAuthservIDs mail.lab.test,
                           no host ignored, nothing rejected) in a mount namespace of its own
                           where /etc/resolv.conf names that server: the system's file is
                           untouched
    policyd-spf.conf, policyd-spf.py
                           policyd-spf as a Postfix spawn service (user nobody), its pydns
                           pointed at that server; Authentication-Results instead of
                           Received-SPF, nothing rejected, loopback not skipped
    *.log                  the DNS server's and the milters' output (they have no log file of
                           their own: no syslog here)

The lab's Postfix adds, newest first, `Authentication-Results: mail.lab.test; dmarc=...`,
`Authentication-Results: mail.lab.test; dkim=...` and `Authentication-Results:
mail.lab.test; spf=...`, one field per check.  break_dkim() publishes another key under
lab._domainkey.lab.test in the verifier's TestDNSData (SIGUSR1 reloads it), so the next
signatures fail with `dkim=fail reason="signature verification failed"`; fix_dkim()
publishes the right one again.  DMARC still passes then, through SPF.
"""

import os
import random
import re
import signal
import socket
import time

from . import packages
from .carbon import ForegroundDaemon
from .common import DOMAIN, HOST, LabError
from .procs import _run, _write

PACKAGES = ("opendkim", "opendkim-tools", "opendmarc", "postfix-policyd-spf-python", "python3-dnslib")
SYSTEM_PYTHON = "/usr/bin/python3"
SELECTOR = "lab"
KEY_NAME = "%s._domainkey.%s" % (SELECTOR, DOMAIN)
SPF_RECORD = "v=spf1 ip4:127.0.0.0/8 -all"
DMARC_RECORD = "v=DMARC1; p=reject"
SPF_SERVICE = "policyd-spf"
# opendkim reloads in a thread of its own when signalled, with no sign of being done but a
# log line (no syslog here): a mail sent later than this is checked with the new keys
RELOAD_SECONDS = 0.3
# policyd-spf run by Postfix's spawn(8), with pydns asking the lab's DNS server (argv[1]:
# its address; argv[2]: the configuration); spf.py read /etc/resolv.conf when imported.
SPF_WRAPPER = """\
import sys
import DNS
import spf  # noqa: F401
from spf_engine.policyd_spf import main
DNS.defaults["server"] = [sys.argv.pop(1)]
sys.exit(main())
"""


def install(verbose=False):
    """Install OpenDKIM, OpenDMARC, policyd-spf and dnslib if missing (as root); starts nothing."""
    return packages.ensure(PACKAGES, verbose=verbose)


def _listening(address, port):
    try:
        socket.create_connection((address, port), timeout=1).close()
        return True
    except OSError:
        return False


def _free_dns_address():
    """A loopback address whose port 53 (UDP and TCP) is free, for the lab's DNS server."""
    rng = random.SystemRandom()
    for _ in range(50):
        address = "127.53.%d.%d" % (rng.randint(0, 255), rng.randint(1, 254))
        try:
            for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                with socket.socket(socket.AF_INET, kind) as s:
                    s.bind((address, 53))
            return address
        except OSError:
            continue
    raise LabError("no loopback address with a free port 53 for the lab's DNS server")


class Milter(ForegroundDaemon):
    """One milter (or the DNS server) in the foreground, its output in NAME.log; stop() kills it."""

    def __init__(self, dir, name):
        super().__init__(dir)
        self.name = name
        self.ports = {}

    @property
    def port(self):
        return self.ports.get("milter")

    def log_files(self):
        return [self._p(self.name + ".log")]

    def start(self, argv, address=HOST, port=None):
        """Run argv(port) until *address*:port accepts connections (a free port unless given)."""
        log = self._p(self.name + ".log")
        if port is not None:
            self.ports = {"milter": port}
            self.spawn(argv(port), log)
            self.wait_ready(lambda: _listening(address, port), self.name)
            return self
        return self.start_on_free_ports(("milter",), lambda: argv(self.port), log,
                                        lambda: _listening(address, self.port), self.name)

    def signal(self, sig):
        if self.running:
            os.kill(self._proc.pid, sig)

    def end(self):
        """Killed: opendkim takes up to 5 s to end after SIGTERM (libmilter's poll), and none of
        these keeps anything worth a clean end."""
        self.signal(signal.SIGKILL)
        super().end()


class AuthChecks:
    """The DKIM signer for mx1 and the checks of the lab's listener for mx1; see the module docstring."""

    def __init__(self, dir, authserv_id):
        self.dir = dir
        self.authserv_id = authserv_id
        self.dns_address = None
        self.dns = Milter(dir, "dns")
        self.signer = Milter(dir, "signer")
        self.verifier = Milter(dir, "verifier")
        self.dmarc = Milter(dir, "opendmarc")
        self.broken = False

    def _p(self, *parts):
        return os.path.join(self.dir, *parts)

    @property
    def signer_port(self):
        return self.signer.port

    def start(self):
        os.makedirs(self.dir, exist_ok=True)
        os.chmod(self.dir, 0o755)  # policyd-spf runs as nobody
        if os.geteuid() == 0:
            install()
        self._make_key("lab")
        self._write_config()
        self.dns_address = _free_dns_address()
        self.dns.start(lambda _port: [SYSTEM_PYTHON, "-u", "-m", "dnslib.zoneresolver", "--zone", self._p("lab.zone"),
                                      "--address", self.dns_address, "--port", "53", "--tcp"],
                       address=self.dns_address, port=53)
        _write(self._p("resolv.conf"), "nameserver %s\noptions timeout:2 attempts:2\n" % self.dns_address)
        self.signer.start(lambda port: self._opendkim("signer", port))
        self.verifier.start(lambda port: self._opendkim("verifier", port))
        self.dmarc.start(self._opendmarc)
        return self

    def stop(self):
        for part in (self.dmarc, self.verifier, self.signer, self.dns):
            part.stop()

    def logs(self, lines=30):
        return "\n".join(text for text in (part.logs(lines) for part in (self.dns, self.signer, self.verifier,
                                                                          self.dmarc)) if text)

    # ------------------------------------------------------------------ config

    def _make_key(self, name):
        """A key for lab.test, *name*.private and *name*.txt (opendkim-genkey, made once);
        the text of its TXT record."""
        if not os.path.exists(self._p(name + ".txt")):
            _run(["opendkim-genkey", "-D", self.dir, "-d", DOMAIN, "-s", name], timeout=60)
        with open(self._p(name + ".txt")) as fh:
            return "".join(re.findall(r'"([^"]*)"', fh.read()))

    def _write_config(self):
        p = self._p
        _write(p("keytable"), "%s %s:%s:%s\n" % (KEY_NAME, DOMAIN, SELECTOR, p("lab.private")))
        _write(p("signingtable"), "*@%s %s\n" % (DOMAIN, KEY_NAME))
        self._publish("lab")
        _write(p("lab.zone"), '%s. 60 IN TXT "%s"\n_dmarc.%s. 60 IN TXT "%s"\n'
               % (DOMAIN, SPF_RECORD, DOMAIN, DMARC_RECORD))
        _write(p("ignore-hosts"), "192.0.2.1\n")  # the default, 127.0.0.1, would skip mx1's mail
        _write(p("policyd-spf.conf"), (
            "debugLevel = 1\nTestOnly = 1\nHELO_reject = False\nMail_From_reject = False\n"
            "PermError_reject = False\nTempError_Defer = False\nskip_addresses = 192.0.2.1/32\n"
            "Header_Type = AR\nAuthserv_Id = %s\n") % self.authserv_id)
        _write(p("policyd-spf.py"), SPF_WRAPPER)

    def _publish(self, name):
        """The verifier's TestDNSData: the key *name* as lab._domainkey.lab.test."""
        _write(self._p("testdns.txt"), "%s %s\n" % (KEY_NAME, self._make_key(name)))

    def _opendkim(self, role, port):
        common = "Socket inet:%d@%s\nPidFile %s\nSyslog no\nUMask 022\n" % (port, HOST, self._p(role + ".pid"))
        if role == "signer":
            text = ("Mode s\nKeyTable file:%s\nSigningTable refile:%s\nCanonicalization relaxed/simple\n"
                    "RequireSafeKeys false\n" % (self._p("keytable"), self._p("signingtable")))
        else:
            text = ("Mode v\nAuthservID %s\nAlwaysAddARHeader yes\nTestDNSData file:%s\n"
                    % (self.authserv_id, self._p("testdns.txt")))
        _write(self._p(role + ".conf"), common + text)
        return ["/usr/sbin/opendkim", "-f", "-x", self._p(role + ".conf")]

    def _opendmarc(self, port):
        _write(self._p("opendmarc.conf"), (
            "Socket inet:%d@%s\nPidFile %s\nAuthservID %s\nTrustedAuthservIDs %s\nIgnoreHosts %s\n"
            "RejectFailures false\nFailureReports false\nSPFSelfValidate false\nSyslog false\n")
            % (port, HOST, self._p("opendmarc.pid"), self.authserv_id, self.authserv_id, self._p("ignore-hosts")))
        # its own mount namespace, where /etc/resolv.conf names the lab's DNS server
        return ["unshare", "-m", "--propagation", "private", "sh", "-c",
                'mount --bind "$0" /etc/resolv.conf && exec /usr/sbin/opendmarc -f -c "$1"',
                self._p("resolv.conf"), self._p("opendmarc.conf")]

    def listener_options(self):
        """master.cf lines for the lab's listener for mx1 (its -o options, then the policyd-spf
        service they name)."""
        return (f"  -o smtpd_milters=inet:{HOST}:{self.verifier.port},inet:{HOST}:{self.dmarc.port}\n"
                f"  -o milter_default_action=tempfail\n"
                f"  -o {{ smtpd_recipient_restrictions = reject_unlisted_recipient, "
                f"check_policy_service unix:private/{SPF_SERVICE} }}\n"
                f"{SPF_SERVICE} unix - n n - 0 spawn\n"
                f"  user=nobody argv={SYSTEM_PYTHON} {self._p('policyd-spf.py')} {self.dns_address} "
                f"{self._p('policyd-spf.conf')}\n")

    # ------------------------------------------------------------------ faults

    def break_dkim(self):
        """The verifier finds another key for lab.test: the next signatures fail."""
        self._set_key("wrong")

    def fix_dkim(self):
        """The verifier finds mx1's key again."""
        self._set_key("lab")

    def _set_key(self, name):
        if self.broken == (name != "lab"):
            return
        self._publish(name)
        self.verifier.signal(signal.SIGUSR1)  # opendkim reloads its configuration and data sets
        self.broken = name != "lab"
        time.sleep(RELOAD_SECONDS)
