"""The mail lab's private Postfix: configuration, start/stop, queue, sending.

Postfix(layout, tls) writes postfix/main.cf, master.cf (smtp, submission and
smtps on 127.0.0.1, no chroot), vmailbox and header_checks, and delivers
every accepted mail for lab.test to Dovecot over LMTP.  Mail for any other
domain is refused at RCPT: there is no outbound smtp transport.
"""

import email.message
import email.utils
import json
import os
import secrets
import smtplib
import time

from .common import DOMAIN, HOST, LOCAL_DOMAIN, ipv6_loopback
from .procs import _pid_alive, _read_pid, _run, _write

# master.cf: Postfix's own internal services, without chroot (every private instance has them).
INTERNAL_SERVICES = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
  -o max_use=1
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
local     unix  -       n       n       -       -       local
"""

# main.cf: retries and notices of every private instance (short, for tests)
QUEUE_SETTINGS = """\
queue_run_delay = 5s
minimal_backoff_time = 2s
maximal_backoff_time = 10s
maximal_queue_lifetime = 1h
bounce_queue_lifetime = 1h
delay_warning_time = 0
biff = no
append_dot_mydomain = no
readme_directory = no
"""


def instance_settings(d):
    """main.cf lines of a private instance in the directory *d*: its own configuration,
    queue, data and log."""
    return f"""\
compatibility_level = 3.6
config_directory = {d}/postfix
queue_directory = {d}/spool
data_directory = {d}/postfix-data
maillog_file = {d}/log/postfix.log
maillog_file_prefixes = {d}
mail_owner = postfix
setgid_group = postdrop
"""


class Postfix:
    def __init__(self, layout, tls):
        self.pipes = {}  # address -> (service name, argv, user): see pipe()
        self.aliases = {}  # local part -> argv: see alias_command()
        self.services = {}  # name -> further master.cf lines: see add_services()
        self.layout = layout
        self.tls = tls

    # ---------------------------------------------------------------- config

    def write_config(self):
        lay = self.layout
        d, p = lay.dir, lay.ports
        v6 = ipv6_loopback()  # the smtp port listens on ::1 too
        _write(lay.p("postfix", "main.cf"), f"""\
# Private Postfix of the check_mail_roundtrip mail lab (generated).
{instance_settings(d)}myhostname = mail.{DOMAIN}
mydomain = {DOMAIN}
myorigin = {DOMAIN}
mydestination = {LOCAL_DOMAIN}
mynetworks = 127.0.0.0/8{" [::1]/128" if v6 else ""}
inet_interfaces = {HOST}{", [::1]" if v6 else ""}
inet_protocols = {"all" if v6 else "ipv4"}
smtp_bind_address = {HOST}
alias_maps = texthash:{d}/postfix/aliases
alias_database =
local_recipient_maps = $alias_maps
allow_mail_to_commands = alias
default_privs = nobody
relay_domains =
relayhost =
relay_transport = error:5.7.1 the mail lab sends nothing off this machine
default_transport = error:5.7.1 the mail lab sends nothing off this machine
virtual_mailbox_domains = {DOMAIN}
virtual_mailbox_maps = texthash:{d}/postfix/vmailbox
virtual_transport = lmtp:unix:{d}/dovecot/run/lmtp
transport_maps = texthash:{d}/postfix/transport
recipient_delimiter = +
smtpd_relay_restrictions = reject_unauth_destination
smtpd_recipient_restrictions = reject_unlisted_recipient
smtpd_banner = $myhostname ESMTP mail lab
smtpd_error_sleep_time = 0
smtpd_soft_error_limit = 1000
smtpd_hard_error_limit = 1000
smtpd_client_connection_rate_limit = 0
in_flow_delay = 0
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = {d}/dovecot/run/auth-postfix
smtpd_sasl_security_options = noanonymous
smtpd_tls_auth_only = no
smtpd_tls_security_level = may
smtpd_tls_chain_files = {d}/tls/server.key, {d}/tls/server.pem
smtpd_tls_session_cache_database =
smtpd_tls_received_header = yes
smtp_tls_security_level = none
header_checks = regexp:{d}/postfix/header_checks
{QUEUE_SETTINGS}""")
        common = "-o syslog_name=postfix/{name}"
        _write(lay.p("postfix", "master.cf"), f"""\
# Private Postfix of the check_mail_roundtrip mail lab: no chroot, loopback only.
# service type  private unpriv  chroot  wakeup  maxproc command + args
{HOST}:{p['smtp']} inet n - n - - smtpd
{"[::1]:%d inet n - n - - smtpd" % p['smtp'] if v6 else "# no IPv6 loopback on this machine"}
{HOST}:{p['submission']} inet n - n - - smtpd
  {common.format(name='submission')}
  -o smtpd_tls_security_level=encrypt
  -o smtpd_tls_auth_only=yes
  -o smtpd_client_restrictions=permit_sasl_authenticated,reject
  -o smtpd_recipient_restrictions=permit_sasl_authenticated,reject
{HOST}:{p['smtps']} inet n - n - - smtpd
  {common.format(name='smtps')}
  -o smtpd_tls_wrappermode=yes
  -o smtpd_client_restrictions=permit_sasl_authenticated,reject
  -o smtpd_recipient_restrictions=permit_sasl_authenticated,reject
""" + INTERNAL_SERVICES + "".join(self._pipe_services()) + "".join(self.services.values()))
        self.write_vmailbox()
        _write(lay.p("postfix", "aliases"),
               "".join('%s "|%s"\n' % (name, " ".join(argv)) for name, argv in sorted(self.aliases.items())))
        _write(lay.p("postfix", "transport"),
               "".join("%s %s:\n" % (a, name) for a, (name, _argv, _user) in sorted(self.pipes.items())))
        if not os.path.exists(lay.p("postfix", "header_checks")):
            _write(lay.p("postfix", "header_checks"), "")

    def write_vmailbox(self):
        """The recipients Postfix accepts: one line per lab user and per pipe address."""
        _write(self.layout.p("postfix", "vmailbox"),
               "".join("%s OK\n" % u for u in sorted(set(self.layout.users) | set(self.pipes))))

    def pipe(self, address, argv, user):
        """Deliver mail for *address* to the program *argv* (a list; Postfix's ${sender},
        ${recipient} expand in it), run as *user*, through a pipe(8) transport: exit 0
        delivered, 75 deferred and retried, others bounced.  Reloads Postfix."""
        name = "pipe%d" % (len(self.pipes) + 1) if address not in self.pipes else self.pipes[address][0]
        self.pipes[address] = (name, list(argv), user)
        self.write_config()
        self.reload()

    def alias_command(self, local_part, argv):
        """Mail for *local_part*@LOCAL_DOMAIN goes to the command *argv* by an aliases
        entry ("|command"), run by local(8) as the user nobody with the envelope in
        $SENDER, $RECIPIENT and $ORIGINAL_RECIPIENT.  Reloads Postfix; the address."""
        self.aliases[local_part] = list(argv)
        self.write_config()
        self.reload()
        return "%s@%s" % (local_part, LOCAL_DOMAIN)

    def _pipe_services(self):
        for _address, (name, argv, user) in sorted(self.pipes.items()):
            # D, R: Delivered-To and Return-Path (the envelope sender); null_sender=: a bounce's is empty
            yield "%s unix - n n - - pipe\n  flags=DRq null_sender= user=%s argv=%s\n" % (
                name, user, " ".join(argv))

    def add_services(self, name, text):
        """Further master.cf lines *text* (e.g. another smtpd listener) kept under *name*
        whenever the configuration is rewritten; text None removes them.  Reloads Postfix."""
        if text is None:
            self.services.pop(name, None)
        else:
            self.services[name] = text
        self.write_config()
        self.settle_config()
        self.reload()

    def settle_config(self):
        """Date main.cf two seconds back: the postfix command waits until a freshly
        written main.cf is that old (1.5-2 s per reload here), and this one is complete."""
        then = time.time() - 2
        os.utime(self.layout.p("postfix", "main.cf"), (then, then))

    def write_header_checks(self, text):
        # cleanup runs with max_use=1, so the next mail reads the new table
        _write(self.layout.p("postfix", "header_checks"), text)

    # ------------------------------------------------------------ start/stop

    def _postfix(self, *args, **kw):
        return _run(["postfix", "-c", self.layout.postfix_dir, *args], **kw)

    def pid(self):
        """The master's pid from its pid file (None when there is none)."""
        return _read_pid(os.path.join(self.layout.queue_dir, "pid", "master.pid"))

    def start(self):
        # "postfix start" runs the integrity checks and creates the queue folders
        self._postfix("start", timeout=30)

    def stop(self):
        """Ask a running master to stop; returns its pid (None: none known)."""
        pid = self.pid()
        if pid and _pid_alive(pid):
            self._postfix("stop", check=False, timeout=20)
        return pid

    def reload(self):
        self._postfix("reload")

    # ----------------------------------------------------------------- queue

    def queue_files(self, *queues):
        """Queue ids in the given queues (default: all of them)."""
        ids = []
        for q in queues or ("maildrop", "incoming", "active", "deferred", "hold"):
            for _root, _dirs, files in os.walk(os.path.join(self.layout.queue_dir, q)):
                ids.extend(files)
        return ids

    def held(self):
        """Queue ids in the Postfix hold queue."""
        return sorted(self.queue_files("hold"))

    def queue(self):
        """The whole Postfix queue as postqueue -j reports it (list of dicts)."""
        res = _run(["postqueue", "-c", self.layout.postfix_dir, "-j"])
        return [json.loads(line) for line in res.stdout.splitlines() if line.strip()]

    def release_held(self):
        """Take every held mail off hold and deliver the queue now."""
        if self.held():
            _run(["postsuper", "-c", self.layout.postfix_dir, "-H", "ALL"])
        _run(["postqueue", "-c", self.layout.postfix_dir, "-f"])

    def clear_queue(self):
        """Delete every mail in the queue."""
        if self.queue_files():
            _run(["postsuper", "-c", self.layout.postfix_dir, "-d", "ALL"], check=False)

    # --------------------------------------------------------------- sending

    def send(self, to=None, subject=None, body="mail lab test\n", sender=None,
             port="smtp", auth=None, starttls=True, headers=None, timeout=15):
        """Send one mail into the lab over SMTP (CA verified); returns Message-ID.

        port: "smtp", "submission" or "smtps". auth: (user, password), or True
        for the sender's own lab credentials (needed on submission/smtps).
        """
        users, ports = self.layout.users, self.layout.ports
        to = to or "monitor@" + DOMAIN
        sender = sender or "other@" + DOMAIN
        if auth is True:
            auth = (sender, users[sender])
        if auth is None and port in ("submission", "smtps"):
            auth = (sender, users[sender])
        msg = email.message.EmailMessage()
        msg["From"] = sender
        msg["To"] = to if isinstance(to, str) else ", ".join(to)
        msg["Subject"] = subject or "mail lab %s" % secrets.token_hex(6)
        msg["Date"] = email.utils.formatdate(localtime=True)
        msg["Message-ID"] = email.utils.make_msgid(domain=DOMAIN)
        for k, v in (headers or {}).items():
            msg[k] = v
        msg.set_content(body)
        ctx = self.tls.ssl_context()
        if port == "smtps":
            client = smtplib.SMTP_SSL(HOST, ports["smtps"], timeout=timeout, context=ctx)
        else:
            client = smtplib.SMTP(HOST, ports[port], timeout=timeout)
        with client:
            client.ehlo("client.lab.test")
            if starttls and port != "smtps":
                client.starttls(context=ctx)
                client.ehlo("client.lab.test")
            if auth:
                client.login(*auth)
            client.send_message(msg, from_addr=sender,
                                to_addrs=[to] if isinstance(to, str) else list(to))
        return msg["Message-ID"]
