"""The relay lab: a second Postfix, mx1.lab.test, as the hop before the mail lab's Postfix.

    relay = RelayLab(lab).start()     # lab: a running MailLab
    send a mail for a lab user to (relay.host, relay.port), STARTTLS with the lab CA
    relay.hold(20); ...; relay.release()
    relay.break_dkim(); ...; relay.fix_dkim()
    relay.stop()

mx1 is a private Postfix instance of its own (main.cf, master.cf, queue, log in
mx1/ inside the lab directory) listening on 127.0.0.1 at `port`, with
STARTTLS and the lab CA's server certificate.  It accepts mail for lab.test
from loopback only, DKIM-signs mail from lab.test (tests/lab/dkim.py) and
relays it over SMTP with mandatory TLS to a listener of its own on the lab's
Postfix (`mail.lab.test`).  Only that listener runs the verdict checks
(OpenDKIM verifying, OpenDMARC, policyd-spf; they add
`Authentication-Results: mail.lab.test; ...`) before the lab delivers to
Dovecot: mail sent to the lab's own ports is handled exactly as without the
relay lab, and a lab that never starts it starts no faster or slower.

A mail through mx1 reaches a mailbox with three Received lines, newest first:
Dovecot's LMTP line, mail.lab.test's (from mx1.lab.test, with ESMTPS) and
mx1.lab.test's (from the client, with ESMTPS when it used STARTTLS).

hold(seconds) keeps each mail in mx1's hold queue for that long before it is
relayed (header_checks HOLD and the lab's releaser, as the lab's own delay
fault), so the delay shows between mx1's and mail.lab.test's Received dates;
hold() without seconds keeps mail until release().

Beyond the fixture's agreed interface (host, port, hold(seconds), release(),
break_dkim(), fix_dkim(), authserv_id): hold() without seconds, headers(user)
(the header fields of the mail in a mailbox, read with doveadm), reset() (what
the relay_lab fixture does before each test), name, and start_seconds (about
1.5 s here beside a running lab, 0.5 s of it the 2048-bit DKIM key).
"""

import email.parser
import email.policy
import json
import os
import pwd
import time

from .common import DOMAIN, HOST, LabError, Layout
from .daemon import wait_until
from .dkim import AuthChecks
from .faults import NO_FAULTS, Faults
from .postfix import INTERNAL_SERVICES, QUEUE_SETTINGS, Postfix, instance_settings
from .procs import _end_session, _pick_ports, _pid_alive, _tail, _wait_port, _write

NAME = "mx1." + DOMAIN
AUTHSERV_ID = "mail." + DOMAIN
SUBDIR = "mx1"
# the lab Postfix's master.cf lines for the listener mx1 relays to, kept under this name
LISTENER = "relay-in"
PORT_NAMES = ("smtp", "relay_in")
# reset() waits at most this long for mail on its way through mx1 and the lab
IN_TRANSIT_SECONDS = 10.0


class RelayPostfix(Postfix):
    """mx1's Postfix: relays everything for lab.test to 127.0.0.1:relay_port with TLS."""

    def __init__(self, layout, tls, relay_port, milters=()):
        super().__init__(layout, tls)
        self.relay_port = relay_port
        self.milters = list(milters)

    def write_config(self):
        lay = self.layout
        d = lay.dir
        milters = ",".join("inet:%s:%d" % (HOST, port) for port in self.milters)
        _write(lay.p("postfix", "main.cf"), f"""\
# Private Postfix {NAME}: the first hop of the check_mail_roundtrip mail lab (generated).
{instance_settings(d)}myhostname = {NAME}
mydomain = {DOMAIN}
myorigin = {DOMAIN}
mydestination =
mynetworks = 127.0.0.0/8
inet_interfaces = {HOST}
inet_protocols = ipv4
smtp_bind_address = {HOST}
alias_maps =
alias_database =
local_recipient_maps =
relay_domains = {DOMAIN}
relay_transport = relay:[{HOST}]:{self.relay_port}
default_transport = error:5.7.1 the mail lab sends nothing off this machine
smtpd_relay_restrictions = reject_unauth_destination
smtpd_recipient_restrictions =
smtpd_banner = $myhostname ESMTP mail lab relay
smtpd_error_sleep_time = 0
smtpd_client_connection_rate_limit = 0
in_flow_delay = 0
smtpd_milters = {milters}
non_smtpd_milters =
milter_default_action = tempfail
smtpd_tls_security_level = may
smtpd_tls_chain_files = {self.tls.layout.key_file}, {self.tls.layout.cert_file}
smtpd_tls_session_cache_database =
smtpd_tls_received_header = yes
smtp_tls_security_level = encrypt
smtp_tls_session_cache_database =
header_checks = regexp:{d}/postfix/header_checks
{QUEUE_SETTINGS}""")
        _write(lay.p("postfix", "master.cf"), f"""\
# Private Postfix {NAME}: no chroot, loopback only.
{HOST}:{lay.ports['smtp']} inet n - n - - smtpd
relay     unix  -       -       n       -       -       smtp
""" + INTERNAL_SERVICES)
        if not os.path.exists(lay.p("postfix", "header_checks")):
            _write(lay.p("postfix", "header_checks"), "")


class RelayLab:
    """mx1.lab.test in front of a running MailLab; see the module docstring.

    Attributes: host, port (mx1's SMTP port), name ("mx1.lab.test"), authserv_id
    ("mail.lab.test"), relay_in_port (the lab Postfix's listener for mx1), dir, postfix
    (mx1's RelayPostfix), faults (mx1's Faults: hold, delay, release), auth (the DKIM
    signer and the checks: tests/lab/dkim.py), start_seconds (how long start() took).
    """

    name = NAME
    authserv_id = AUTHSERV_ID

    def __init__(self, lab):
        self.lab = lab
        self.host = HOST
        self.layout = Layout(lab.layout.p(SUBDIR))
        self.dir = self.layout.dir
        self.postfix = None
        self.faults = None
        self.auth = None
        self.started = False

    @property
    def port(self):
        return self.layout.ports.get("smtp")

    @property
    def relay_in_port(self):
        return self.layout.ports.get("relay_in")

    # ------------------------------------------------------------ start/stop

    def start(self):
        """Start the milters and the DNS server, give the lab's Postfix its listener for mx1,
        start mx1; returns self."""
        t0 = time.monotonic()
        for sub in ("postfix", "spool", "postfix-data", "log", "run"):
            os.makedirs(self.layout.p(sub), exist_ok=True)
            os.chmod(self.layout.p(sub), 0o755)
        pf = pwd.getpwnam("postfix")
        os.chown(self.layout.p("postfix-data"), pf.pw_uid, pf.pw_gid)
        self.layout.ports = _pick_ports(PORT_NAMES, taken=self.lab.ports.values())
        self.auth = AuthChecks(self.layout.p("auth"), AUTHSERV_ID)
        self.started = True
        self.auth.start()
        self.postfix = RelayPostfix(self.layout, self.lab.tls, self.relay_in_port, [self.auth.signer_port])
        self.faults = Faults(self.layout, self.postfix, None)
        self.postfix.write_config()
        self.postfix.settle_config()
        self.faults.save(dict(NO_FAULTS))  # header_checks are empty: no hold
        self.lab.postfix.add_services(LISTENER, self._listener())
        self.postfix.start()
        _wait_port(self.port, up=True, timeout=20)
        _wait_port(self.relay_in_port, up=True, timeout=20)
        self.start_seconds = time.monotonic() - t0
        return self

    def _listener(self):
        """The lab Postfix's master.cf lines for the smtpd that mx1 relays to."""
        return f"""\
{HOST}:{self.relay_in_port} inet n - n - - smtpd
  -o syslog_name=postfix/{LISTENER}
""" + self.auth.listener_options()

    def stop(self):
        """Stop mx1 and the releaser; take the listener off the lab's Postfix; stop the milters
        and the DNS server."""
        if not self.started:
            return
        if self.postfix is not None:
            self.faults.releaser.stop()
            pid = self.postfix.stop()
            if pid:
                _end_session(pid)
        lab_pid = self.lab.postfix.pid()
        if lab_pid and _pid_alive(lab_pid) and LISTENER in self.lab.postfix.services:
            self.lab.postfix.add_services(LISTENER, None)
        self.auth.stop()
        self.started = False

    def logs(self, lines=30):
        """The tails of mx1's Postfix and releaser logs and the milters' output (for error messages)."""
        out = []
        for path in (self.layout.p("log", "postfix.log"), self.layout.p("log", "releaser.log")):
            text = _tail(path, lines)
            if text:
                out.append("==> %s <==\n%s" % (path, text))
        if self.auth is not None:
            out.append(self.auth.logs(lines))
        return "\n".join(text for text in out if text)

    def headers(self, user, timeout=20.0):
        """The header of each mail in *user*'s INBOX, once there is one (bounded wait):
        a list of email.message.Message (headers only), oldest first."""
        self.lab.wait_for(user, 1, timeout=timeout)
        res = self.lab.dovecot.doveadm("-f", "json", "fetch", "-u", user, "hdr", "mailbox", "INBOX", "all")
        parser = email.parser.Parser(policy=email.policy.compat32)
        return [parser.parsestr(row["hdr"], headersonly=True) for row in json.loads(res.stdout or "[]")]

    # ------------------------------------------------------------------ faults

    def hold(self, seconds=None):
        """Keep each mail in mx1's queue for *seconds* before relaying it (None: until release())."""
        if seconds is None:
            self.faults.hold()
        else:
            self.faults.delay(seconds)

    def release(self):
        """Stop holding and relay every held mail now."""
        self.faults.release()

    def break_dkim(self):
        """The lab's verifier finds another key for lab.test: mx1's next signatures fail."""
        self.auth.break_dkim()

    def fix_dkim(self):
        """The lab's verifier finds mx1's key again."""
        self.auth.fix_dkim()

    def reset(self):
        """No hold, nothing in mx1's queue, DKIM signatures that verify."""
        if not self.started:
            raise LabError("the relay lab is not running")
        self.faults.clear()
        # a mail on its way (relayed, or delivered to Dovecot) gets there before the queue is
        # emptied and the lab's mailboxes wiped: it would land in the next test's mailbox
        for postfix in (self.postfix, self.lab.postfix):
            wait_until(lambda pf=postfix: not pf.queue_files("maildrop", "incoming", "active"), IN_TRANSIT_SECONDS)
        self.postfix.clear_queue()
        self.fix_dkim()
