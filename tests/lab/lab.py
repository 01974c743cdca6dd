"""A private Postfix + Dovecot mail lab on 127.0.0.1 for the test suite.

Everything lives in one directory (a temporary one by default):

    tls/        CA, server certificate, extra certificates from make_cert()
    postfix/    main.cf, master.cf, header_checks, vmailbox
    spool/      Postfix queue_directory; postfix-data/ its data_directory
    dovecot/    dovecot.conf, listeners.conf, users; run/ (base_dir), state/
    sieve/      global sieve_before scripts (echo address, junk fault)
    mail/       Maildirs, one per virtual user (owned by the "vmail" user)
    log/        postfix.log, dovecot.log, releaser.log
    faults.json the faults that are set (shared by every process using the lab)
    lab.json    host, ports, CA, users, dir (written by start())

Nothing here touches the system Postfix or Dovecot: both daemons run from
their own configuration, listen on 127.0.0.1 only, and mail for any domain
other than lab.test is refused at RCPT (there is no outbound smtp transport).
Must run as root (Postfix and Dovecot need it to switch users).
"""

import email.message
import email.utils
import grp
import json
import os
import pwd
import random
import re
import secrets
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import tempfile
import time

HOST = "127.0.0.1"
DOMAIN = "lab.test"
PORT_NAMES = ("smtp", "submission", "smtps", "imap", "imaps", "pop3", "pop3s")
USER_NAMES = ("monitor", "other", "echo")
ECHO_USER = "echo@" + DOMAIN
VMAIL_USER = "vmail"
DEFAULT_DIR = "/tmp/check_mail_roundtrip-lab"
PACKAGES = ("postfix", "dovecot-core", "dovecot-imapd", "dovecot-pop3d",
            "dovecot-lmtpd", "dovecot-sieve", "openssl")
# Folders every mailbox has from the start (name -> special-use flag).
FOLDERS = {"Junk": "\\Junk"}
# Header checks per mail-path fault (only one of them is active at a time).
HEADER_CHECKS = {
    None: "",
    "hold": "/^/ HOLD mail lab fault: hold\n",
    "delay": "/^/ HOLD mail lab fault: delay\n",
    "drop": "/^/ DISCARD mail lab fault: drop\n",
}
JUNK_SCRIPT_OFF = "# mail lab: no junk fault set\n"
JUNK_SCRIPT_ON = """\
# mail lab: junk fault, every mail goes to the Junk folder
require ["fileinto", "editheader"];
addheader "X-Spam-Flag" "YES";
fileinto "Junk";
stop;
"""
NO_FAULTS = {"path": None, "delay": 0, "junk": False, "imap_down": False}


class LabError(RuntimeError):
    """The lab could not do what was asked; the message says why."""


def _run(cmd, check=True, timeout=60, **kw):
    """Run a command, capture its output, raise LabError on failure."""
    try:
        res = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True,
                             text=True, timeout=timeout, **kw)
    except subprocess.TimeoutExpired as exc:
        raise LabError("timed out after %ss: %s" % (timeout, " ".join(cmd))) from exc
    except FileNotFoundError as exc:
        raise LabError("command not found: %s (run `python3 -m tests.lab install`)"
                       % cmd[0]) from exc
    if check and res.returncode != 0:
        raise LabError("%s failed (exit %s): %s" % (
            " ".join(cmd), res.returncode, (res.stderr or res.stdout).strip()[-2000:]))
    return res


def _write(path, text, mode=0o644):
    """Write a file atomically (temp file + rename)."""
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "w") as fh:
        fh.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def install(verbose=True):
    """Install the Debian packages the lab needs (as root); no-op if present.

    The Postfix debconf question is preseeded with "No configuration" and a
    temporary policy-rc.d keeps apt from starting a system Postfix/Dovecot.
    Also creates the "vmail" system user that owns the lab's Maildirs.
    """
    def say(msg):
        if verbose:
            print("lab install: " + msg, file=sys.stderr)

    from . import packages
    try:
        installed = packages.ensure(PACKAGES, debconf=(
            "postfix postfix/main_mailer_type select No configuration\n"
            "postfix postfix/mailname string lab.test\n"), verbose=verbose)
    except packages.PackageError as exc:
        raise LabError("%s: python3 -m tests.lab install" % exc) from exc
    if not installed:
        say("packages already installed")
    _ensure_vmail_user()


def _ensure_vmail_user():
    try:
        return pwd.getpwnam(VMAIL_USER)
    except KeyError:
        pass
    if os.geteuid() != 0:
        raise LabError("system user %s is missing; run as root" % VMAIL_USER)
    _run(["useradd", "--system", "--user-group", "--no-create-home",
          "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", VMAIL_USER])
    return pwd.getpwnam(VMAIL_USER)


def _port_is_free(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def _pick_ports(names, taken=()):
    """Free TCP ports on 127.0.0.1, outside the kernel's ephemeral range."""
    ports, used = {}, set(taken)
    rng = random.SystemRandom()
    for _ in range(500):
        if len(ports) == len(names):
            break
        port = rng.randint(20000, 32000)
        if port in used or not _port_is_free(port):
            continue
        used.add(port)
        ports[names[len(ports)]] = port
    if len(ports) != len(names):
        raise LabError("could not find %d free ports on %s" % (len(names), HOST))
    return ports


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is not alive
        with open("/proc/%d/stat" % pid) as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _read_pid(path):
    try:
        with open(path) as fh:
            return int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _session_pids(sid):
    """Pids of the processes in session `sid` (a daemon and its children)."""
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # fields[0] is the state, [3] the session id
        if int(fields[3]) == sid and fields[0] != "Z":
            pids.append(int(name))
    return pids


def _kill_session(sid, timeout=5.0):
    """SIGTERM, then SIGKILL, every process of session `sid`; bounded."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = _session_pids(sid)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _session_pids(sid):
            time.sleep(0.05)


def _tail(path, lines=30):
    try:
        with open(path, errors="replace") as fh:
            return "".join(fh.readlines()[-lines:])
    except OSError:
        return ""


class MailLab:
    """Private Postfix + Dovecot on 127.0.0.1.

    lab = MailLab(); lab.start(); ...; lab.stop()   or   with MailLab() as lab: ...

    Attributes (valid after start()): host, domain, dir, ports (dict with the
    keys smtp, submission, smtps, imap, imaps, pop3, pop3s), ca_file,
    ca_key_file, cert_file, key_file, users (address -> password).
    """

    def __init__(self, dir=None, ports=None, keep=False, start_timeout=30.0):
        self.host = HOST
        self.domain = DOMAIN
        self.dir = os.path.abspath(dir) if dir else None
        self.keep = keep
        self.start_timeout = start_timeout
        self._explicit_ports = dict(ports) if ports else None
        if self._explicit_ports and set(self._explicit_ports) != set(PORT_NAMES):
            raise ValueError("ports must have exactly the keys %s" % ", ".join(PORT_NAMES))
        self.ports = dict(self._explicit_ports or {})
        self.users = {}
        self._releaser = None
        self._made_dir = False
        self._set_paths()

    # ------------------------------------------------------------------ paths

    def _set_paths(self):
        d = self.dir or ""
        self.ca_file = os.path.join(d, "tls", "ca.pem")
        self.ca_key_file = os.path.join(d, "tls", "ca.key")
        self.cert_file = os.path.join(d, "tls", "server.pem")
        self.key_file = os.path.join(d, "tls", "server.key")
        self.postfix_dir = os.path.join(d, "postfix")
        self.queue_dir = os.path.join(d, "spool")
        self.dovecot_conf = os.path.join(d, "dovecot", "dovecot.conf")
        self.dovecot_run = os.path.join(d, "dovecot", "run")
        self.postfix_log = os.path.join(d, "log", "postfix.log")
        self.dovecot_log = os.path.join(d, "log", "dovecot.log")
        self.mail_dir = os.path.join(d, "mail")
        self.faults_file = os.path.join(d, "faults.json")
        self.json_file = os.path.join(d, "lab.json")

    def _p(self, *parts):
        return os.path.join(self.dir, *parts)

    @classmethod
    def attach(cls, dir=DEFAULT_DIR):
        """A MailLab object for a lab started elsewhere (e.g. by the CLI)."""
        path = os.path.join(os.path.abspath(dir), "lab.json")
        try:
            with open(path) as fh:
                info = json.load(fh)
        except OSError as exc:
            raise LabError("no lab in %s (%s)" % (dir, exc)) from exc
        lab = cls(dir=info["dir"], ports=info["ports"], keep=True)
        lab.users = dict(info["users"])
        return lab

    # --------------------------------------------------------------- describe

    def describe(self):
        """Everything a client needs: host, ports, ca_file, users, dir."""
        return {
            "host": self.host,
            "domain": self.domain,
            "ports": dict(self.ports),
            "ca_file": self.ca_file,
            "ca_key_file": self.ca_key_file,
            "users": dict(self.users),
            "echo": ECHO_USER,
            "dir": self.dir,
            "logs": {"postfix": self.postfix_log, "dovecot": self.dovecot_log},
        }

    env = describe

    def logs(self, lines=30):
        """Tail of the Postfix and Dovecot logs (for error messages)."""
        out = []
        if not self.dir:
            return ""
        for path in (self.postfix_log, self.dovecot_log,
                     self._p("log", "dovecot-start.err"), self._p("log", "releaser.log")):
            text = _tail(path, lines)
            if text:
                out.append("==> %s <==\n%s" % (path, text))
        return "\n".join(out)

    # ------------------------------------------------------------ start/stop

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    def is_running(self):
        if not self.dir:
            return False
        pf = _read_pid(os.path.join(self.queue_dir, "pid", "master.pid"))
        dc = _read_pid(os.path.join(self.dovecot_run, "master.pid"))
        return bool(pf and dc and _pid_alive(pf) and _pid_alive(dc))

    running = property(is_running)

    def start(self):
        """Make the sandbox, certificates and configs; start both daemons."""
        if os.geteuid() != 0:
            raise LabError("the mail lab must run as root (Postfix and Dovecot switch users)")
        for tool in ("postfix", "dovecot", "doveadm", "openssl", "sievec"):
            if not shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin:/usr/bin"):
                raise LabError("%s is not installed (run `python3 -m tests.lab install`)" % tool)
        _ensure_vmail_user()
        if self.dir is None:
            self.dir = tempfile.mkdtemp(prefix="cmr-lab-")
            self._made_dir = True
        else:
            if self.is_running():
                raise LabError("a lab is already running in %s" % self.dir)
            if os.path.isdir(self.dir) and os.listdir(self.dir):
                if not (os.path.exists(self.json_file) or os.path.exists(self.faults_file)):
                    raise LabError("%s exists and is not a mail lab directory; "
                                   "not touching it" % self.dir)
                self._stop_releaser()
                self._stop_daemons()
                shutil.rmtree(self.dir)
            os.makedirs(self.dir)
        os.chmod(self.dir, 0o755)  # postfix/vmail must traverse to the sockets
        self._set_paths()
        if not self.users:
            self.users = {"%s@%s" % (u, DOMAIN): secrets.token_urlsafe(12)
                          for u in USER_NAMES}
        attempts = 1 if self._explicit_ports else 3
        last = None
        self._make_tls()
        for attempt in range(attempts):
            if not self._explicit_ports:
                self.ports = _pick_ports(PORT_NAMES)
            self._write_config()
            try:
                self._start_daemons()
                last = None
                break
            except LabError as exc:
                last = exc
                self._stop_daemons()
                if "in use" not in (str(exc) + self.logs(10)):
                    break
        if last is not None:
            raise LabError("%s\n%s" % (last, self.logs()))
        self._write_json()
        return self

    def _write_json(self):
        _write(self.json_file, json.dumps(self.describe(), indent=2, sort_keys=True) + "\n",
               mode=0o600)

    def stop(self, keep=None):
        """Stop both daemons and the releaser; remove the dir unless kept."""
        if not self.dir:
            return
        keep = self.keep if keep is None else keep
        self._stop_releaser()
        self._stop_daemons()
        if not keep and os.path.isdir(self.dir):
            shutil.rmtree(self.dir, ignore_errors=True)

    def _stop_daemons(self):
        pf_pid = _read_pid(os.path.join(self.queue_dir, "pid", "master.pid"))
        if pf_pid and _pid_alive(pf_pid):
            _run(["postfix", "-c", self.postfix_dir, "stop"], check=False, timeout=20)
        dc_pid = _read_pid(os.path.join(self.dovecot_run, "master.pid"))
        if dc_pid and _pid_alive(dc_pid):
            try:
                os.kill(dc_pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        # both masters are session leaders: whatever is left in their sessions is ours
        for pid in (pf_pid, dc_pid):
            if pid:
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline and _pid_alive(pid):
                    time.sleep(0.05)
                _kill_session(pid)

    # ------------------------------------------------------------------- TLS

    def _openssl(self, *args):
        return _run(["openssl", *args], cwd=self._p("tls"))

    def _make_tls(self):
        tls = self._p("tls")
        os.makedirs(tls, exist_ok=True)
        os.chmod(tls, 0o755)
        ca_ext = ("basicConstraints=critical,CA:TRUE\n"
                  "keyUsage=critical,keyCertSign,cRLSign\n"
                  "subjectKeyIdentifier=hash\n")
        _write(self._p("tls", "ca.ext"), ca_ext)
        self._openssl("req", "-x509", "-new", "-newkey", "ec", "-pkeyopt",
                      "ec_paramgen_curve:prime256v1", "-nodes", "-sha256",
                      "-keyout", "ca.key", "-out", "ca.pem", "-days", "3650",
                      "-subj", "/O=check_mail_roundtrip lab/CN=Mail Lab CA %s"
                      % secrets.token_hex(4),
                      "-addext", "basicConstraints=critical,CA:TRUE",
                      "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                      "-addext", "subjectKeyIdentifier=hash")
        _write(self._p("tls", "ca.cnf"), (
            "[ca]\ndefault_ca = lab\n"
            "[lab]\ndir = %s\ndatabase = $dir/index.txt\nserial = $dir/serial\n"
            "new_certs_dir = $dir/issued\ncertificate = $dir/ca.pem\n"
            "private_key = $dir/ca.key\ndefault_md = sha256\npolicy = any\n"
            "unique_subject = no\ncopy_extensions = none\nemail_in_dn = no\n"
            "[any]\ncommonName = supplied\norganizationName = optional\n") % tls)
        os.makedirs(self._p("tls", "issued"), exist_ok=True)
        _write(self._p("tls", "index.txt"), "")
        _write(self._p("tls", "serial"), "%s\n" % secrets.token_hex(8).upper())
        cert, key = self.make_cert("localhost", ["IP:127.0.0.1", "DNS:localhost"],
                                   days=3650, name="server")
        os.chmod(key, 0o600)

    def make_cert(self, cn, san_list=(), days=30, expired=False, name=None):
        """A certificate signed by the lab CA: returns (cert_path, key_path).

        san_list: e.g. ["DNS:localhost", "IP:127.0.0.1"]; expired=True makes
        one whose validity ended yesterday.
        """
        name = name or "cert-%s" % secrets.token_hex(4)
        key = self._p("tls", name + ".key")
        csr = self._p("tls", name + ".csr")
        cert = self._p("tls", name + ".pem")
        ext = self._p("tls", name + ".ext")
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
        return ssl.create_default_context(cafile=self.ca_file)

    # ---------------------------------------------------------------- config

    def _vmail(self):
        pw = pwd.getpwnam(VMAIL_USER)
        return pw.pw_uid, pw.pw_gid

    def _write_config(self):
        for sub in ("postfix", "spool", "postfix-data", "dovecot",
                    "dovecot/run", "dovecot/state", "sieve", "mail", "log", "run"):
            os.makedirs(self._p(sub), exist_ok=True)
            os.chmod(self._p(sub), 0o755)
        pf = pwd.getpwnam("postfix")
        os.chown(self._p("postfix-data"), pf.pw_uid, pf.pw_gid)
        uid, gid = self._vmail()
        os.chown(self.mail_dir, uid, gid)
        self._write_postfix()
        self._write_dovecot(uid, gid)
        for user in self.users:
            self._create_mailbox(user)
        if not os.path.exists(self.faults_file):
            self._save_faults(dict(NO_FAULTS))
        self._apply_faults(self._load_faults(), force=True)

    def _write_postfix(self):
        d, p = self.dir, self.ports
        _write(self._p("postfix", "main.cf"), f"""\
# Private Postfix of the check_mail_roundtrip mail lab (generated).
compatibility_level = 3.6
config_directory = {d}/postfix
queue_directory = {d}/spool
data_directory = {d}/postfix-data
maillog_file = {d}/log/postfix.log
maillog_file_prefixes = {d}
mail_owner = postfix
setgid_group = postdrop
myhostname = mail.{DOMAIN}
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
relay_domains =
relayhost =
relay_transport = error:5.7.1 the mail lab sends nothing off this machine
default_transport = error:5.7.1 the mail lab sends nothing off this machine
virtual_mailbox_domains = {DOMAIN}
virtual_mailbox_maps = texthash:{d}/postfix/vmailbox
virtual_transport = lmtp:unix:{d}/dovecot/run/lmtp
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
queue_run_delay = 5s
minimal_backoff_time = 2s
maximal_backoff_time = 10s
maximal_queue_lifetime = 1h
bounce_queue_lifetime = 1h
delay_warning_time = 0
biff = no
append_dot_mydomain = no
readme_directory = no
""")
        common = "-o syslog_name=postfix/{name}"
        _write(self._p("postfix", "master.cf"), f"""\
# Private Postfix of the check_mail_roundtrip mail lab: no chroot, loopback only.
# service type  private unpriv  chroot  wakeup  maxproc command + args
{HOST}:{p['smtp']} inet n - n - - smtpd
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
""")
        _write(self._p("postfix", "vmailbox"),
               "".join("%s OK\n" % u for u in sorted(self.users)))
        if not os.path.exists(self._p("postfix", "header_checks")):
            _write(self._p("postfix", "header_checks"), "")

    def _write_dovecot(self, uid, gid):
        d, p = self.dir, self.ports
        name = os.path.basename(d)
        _write(self.dovecot_conf, f"""\
# Private Dovecot of the check_mail_roundtrip mail lab (generated).
instance_name = {name}
base_dir = {d}/dovecot/run
state_dir = {d}/dovecot/state
protocols = imap pop3 lmtp
listen = {HOST}
log_path = {d}/log/dovecot.log
auth_verbose = yes
ssl = yes
ssl_cert = <{d}/tls/server.pem
ssl_key = <{d}/tls/server.key
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = yes
auth_mechanisms = plain login
default_login_user = dovenull
default_internal_user = dovecot
first_valid_uid = {uid}
last_valid_uid = {uid}
first_valid_gid = {gid}
last_valid_gid = {gid}
mail_uid = {uid}
mail_gid = {gid}
mail_location = maildir:~/Maildir
mail_fsync = never
recipient_delimiter = +
lmtp_save_to_detail_mailbox = no
postmaster_address = postmaster@{DOMAIN}
hostname = mail.{DOMAIN}
submission_host = {HOST}:{p['smtp']}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {d}/dovecot/users
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {d}/dovecot/users
  default_fields = uid={uid} gid={gid} home={d}/mail/%d/%n
}}
namespace inbox {{
  inbox = yes
  separator = /
  mailbox Junk {{
    special_use = \\Junk
    auto = subscribe
  }}
}}
service auth {{
  unix_listener auth-postfix {{
    mode = 0600
    user = postfix
    group = postfix
  }}
}}
service lmtp {{
  unix_listener lmtp {{
    mode = 0600
    user = postfix
    group = postfix
  }}
}}
protocol lmtp {{
  mail_plugins = $mail_plugins sieve
}}
plugin {{
  sieve = file:~/sieve;active=~/.dovecot.sieve
  sieve_before = {d}/sieve/00-echo.sieve
  sieve_before2 = {d}/sieve/10-faults.sieve
  sieve_extensions = +editheader
  sieve_redirect_duplicate_period = 0
  sieve_redirect_envelope_from = recipient
}}
!include {d}/dovecot/listeners.conf
""", mode=0o644)
        self._write_listeners(imap=True)
        _write(self._p("dovecot", "users"),
               "".join("%s:{PLAIN}%s::::::\n" % (u, pw) for u, pw in sorted(self.users.items())),
               mode=0o640)
        os.chown(self._p("dovecot", "users"), 0, grp.getgrnam("dovecot").gr_gid)
        _write(self._p("sieve", "00-echo.sieve"), f"""\
# mail lab: {ECHO_USER} sends every mail straight back to its envelope sender
require ["envelope", "variables", "editheader"];
if envelope :is "to" "{ECHO_USER}" {{
  if exists "X-Mail-Lab-Echo" {{ keep; stop; }}
  set "sender" "";
  if envelope :matches "from" "*" {{ set "sender" "${{1}}"; }}
  if anyof (string :is "${{sender}}" "", string :is "${{sender}}" "{ECHO_USER}") {{
    keep; stop;
  }}
  addheader "X-Mail-Lab-Echo" "{ECHO_USER}";
  redirect "${{sender}}";
  stop;
}}
""")
        if not os.path.exists(self._p("sieve", "10-faults.sieve")):
            _write(self._p("sieve", "10-faults.sieve"), JUNK_SCRIPT_OFF)
        self._compile_sieve("00-echo.sieve")
        self._compile_sieve("10-faults.sieve")

    def _write_listeners(self, imap=True):
        p = self.ports
        imap_port, imaps_port = (p["imap"], p["imaps"]) if imap else (0, 0)
        _write(self._p("dovecot", "listeners.conf"), f"""\
# IMAP listeners get port 0 while the imap-down fault is set
service imap-login {{
  inet_listener imap {{
    address = {HOST}
    port = {imap_port}
  }}
  inet_listener imaps {{
    address = {HOST}
    port = {imaps_port}
    ssl = yes
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    address = {HOST}
    port = {p['pop3']}
  }}
  inet_listener pop3s {{
    address = {HOST}
    port = {p['pop3s']}
    ssl = yes
  }}
}}
""")

    def _compile_sieve(self, name):
        # sievec writes the .svbin next to the script, newer than the script,
        # so the LMTP process never runs a stale binary
        _run(["sievec", "-c", self.dovecot_conf, self._p("sieve", name)])

    def _start_daemons(self):
        # "postfix start" runs the integrity checks and creates the queue folders
        err = self._p("log", "dovecot-start.err")
        with open(err, "w") as fh:
            res = subprocess.run(["dovecot", "-c", self.dovecot_conf],
                                 stdin=subprocess.DEVNULL, stdout=fh, stderr=fh,
                                 timeout=30)
        if res.returncode != 0:
            raise LabError("dovecot did not start: %s" % _tail(err, 10).strip())
        _run(["postfix", "-c", self.postfix_dir, "start"], timeout=30)
        deadline = time.monotonic() + self.start_timeout
        waiting = dict(self.ports)
        sockets = [os.path.join(self.dovecot_run, "lmtp"),
                   os.path.join(self.dovecot_run, "auth-postfix")]
        while time.monotonic() < deadline:
            for name, port in list(waiting.items()):
                try:
                    socket.create_connection((HOST, port), timeout=1).close()
                    del waiting[name]
                except OSError:
                    pass
            if not waiting and all(os.path.exists(s) for s in sockets):
                return
            time.sleep(0.05)
        raise LabError("lab did not come up within %ss; not listening: %s"
                       % (self.start_timeout, ", ".join("%s:%s" % i for i in waiting.items())))

    # -------------------------------------------------------------- mailboxes

    def _user_home(self, user):
        local, _, dom = user.partition("@")
        return os.path.join(self.mail_dir, dom, local)

    def _maildir(self, user, folder="INBOX"):
        root = os.path.join(self._user_home(user), "Maildir")
        if folder.upper() == "INBOX":
            return root
        return os.path.join(root, "." + folder.replace("/", "."))

    def _check_user(self, user):
        if "@" not in user:
            user = "%s@%s" % (user, DOMAIN)
        if user not in self.users:
            raise LabError("unknown lab user %s (have: %s)" % (user, ", ".join(self.users)))
        return user

    def _create_mailbox(self, user):
        """Maildir with INBOX and the special-use folders, owned by vmail."""
        uid, gid = self._vmail()
        home = self._user_home(user)
        root = os.path.join(home, "Maildir")
        made = []
        for path in (os.path.dirname(home), home, root):
            if not os.path.isdir(path):
                os.mkdir(path, 0o700)
                made.append(path)
        for folder in ["INBOX", *FOLDERS]:
            md = self._maildir(user, folder)
            for sub in ("", "cur", "new", "tmp"):
                path = os.path.join(md, sub)
                if not os.path.isdir(path):
                    os.mkdir(path, 0o700)
                    made.append(path)
            if folder != "INBOX" and not os.path.exists(os.path.join(md, "maildirfolder")):
                open(os.path.join(md, "maildirfolder"), "w").close()
                made.append(os.path.join(md, "maildirfolder"))
        subs = os.path.join(root, "subscriptions")
        if not os.path.exists(subs):
            _write(subs, "V\t2\n\n" + "".join("%s\n" % f for f in FOLDERS), mode=0o600)
            made.append(subs)
        for path in made:
            os.chown(path, uid, gid)
        os.chown(os.path.dirname(home), uid, gid)

    def add_user(self, user, password):
        """Another mailbox (any password, e.g. non-ASCII); reloads Postfix."""
        if "@" not in user:
            user = "%s@%s" % (user, DOMAIN)
        self.users[user] = password
        _write(self._p("dovecot", "users"),
               "".join("%s:{PLAIN}%s::::::\n" % (u, pw) for u, pw in sorted(self.users.items())),
               mode=0o640)
        os.chown(self._p("dovecot", "users"), 0, grp.getgrnam("dovecot").gr_gid)
        _write(self._p("postfix", "vmailbox"),
               "".join("%s OK\n" % u for u in sorted(self.users)))
        self._create_mailbox(user)
        _run(["postfix", "-c", self.postfix_dir, "reload"])
        self._write_json()
        return user

    def _mailbox_dirty(self, user):
        root = self._maildir(user)
        try:
            entries = list(os.scandir(root))
        except FileNotFoundError:
            return True
        folders = {"." + f for f in FOLDERS}
        for e in entries:
            if e.name.startswith(".") and e.is_dir() and e.name not in folders:
                return True  # a folder made by a test
        for folder in ["INBOX", *FOLDERS]:
            md = self._maildir(user, folder)
            for sub in ("cur", "new", "tmp"):
                try:
                    with os.scandir(os.path.join(md, sub)) as it:
                        if next(it, None) is not None:
                            return True
                except FileNotFoundError:
                    return True
        return False

    def _wipe_mailbox(self, user):
        """Remove every message and folder; keep the uidvalidity counter."""
        root = self._maildir(user)
        if os.path.isdir(root):
            for e in os.scandir(root):
                if e.name.startswith("dovecot-uidvalidity"):
                    continue
                if e.is_dir(follow_symlinks=False):
                    shutil.rmtree(e.path, ignore_errors=True)
                else:
                    os.unlink(e.path)
        self._create_mailbox(user)

    def fill(self, user, n, folder="INBOX", size=600, seen=False):
        """Put n filler messages into a folder (Maildir files, then indexed)."""
        user = self._check_user(user)
        md = self._maildir(user, folder)
        if not os.path.isdir(os.path.join(md, "cur")):
            self._doveadm("mailbox", "create", "-u", user, folder, check=False)
        uid, gid = self._vmail()
        host = "lab%d" % os.getpid()
        now = int(time.time())
        pad_line = "filler text for the mail lab, nothing to see here.\n"
        flags = "S" if seen else ""
        cur = os.path.join(md, "cur")
        token = secrets.token_hex(4)
        date = email.utils.formatdate(now, localtime=False)
        pid = os.getpid()
        pad = pad_line * (max(0, size) // len(pad_line) + 1)
        flags_wr = os.O_WRONLY | os.O_CREAT | os.O_EXCL
        for i in range(int(n)):
            head = ("From: filler@%s\nTo: %s\nSubject: filler %d %s\n"
                    "Message-ID: <filler.%s.%d@%s>\nDate: %s\n"
                    "MIME-Version: 1.0\nContent-Type: text/plain\n\n"
                    % (DOMAIN, user, i, token, token, i, DOMAIN, date))
            data = (head + pad[:max(0, size - len(head))]).encode()
            name = "%d.M%dP%dR%s.%s,S=%d:2,%s" % (now, i, pid, token, host, len(data),
                                                   flags)
            fd = os.open(os.path.join(cur, name), flags_wr, 0o600)
            try:
                os.write(fd, data)
                os.fchown(fd, uid, gid)
            finally:
                os.close(fd)
        self.count(user, folder)  # let Dovecot index the new files now

    # ------------------------------------------------------------- inspection

    def _doveadm(self, *args, check=True, timeout=120):
        return _run(["doveadm", "-c", self.dovecot_conf, *args], check=check, timeout=timeout)

    def count(self, user, folder="INBOX"):
        """(total, unseen) messages in a folder, as Dovecot sees them."""
        user = self._check_user(user)
        res = self._doveadm("-f", "tab", "mailbox", "status", "-u", user,
                            "messages unseen", folder)
        lines = res.stdout.strip().splitlines()
        head, values = lines[0].split("\t"), lines[1].split("\t")
        row = dict(zip(head, values))
        return int(row["messages"]), int(row["unseen"])

    def messages(self, user, folder="INBOX"):
        """[{"uid", "subject", "message_id", "flags": set}] of a folder."""
        user = self._check_user(user)
        res = self._doveadm("-f", "json", "fetch", "-u", user,
                            "uid flags hdr.subject hdr.message-id",
                            "mailbox", folder, "all")
        out = []
        for row in json.loads(res.stdout or "[]"):
            out.append({
                "uid": int(row.get("uid", 0)),
                "subject": _unfold(row.get("hdr.subject", "")),
                "message_id": _unfold(row.get("hdr.message-id", "")),
                "flags": set(row.get("flags", "").split()),
            })
        return out

    def wait_for(self, user, what=1, folder="INBOX", timeout=10.0, interval=0.05):
        """Poll until a folder matches; returns its messages() list.

        what: an int (at least that many messages) or a callable taking the
        messages() list and returning true. Raises LabError on timeout.
        """
        deadline = time.monotonic() + timeout
        while True:
            msgs = self.messages(user, folder)
            ok = what(msgs) if callable(what) else len(msgs) >= what
            if ok:
                return msgs
            if time.monotonic() >= deadline:
                raise LabError("%s/%s: condition not met within %ss (%d messages: %s)"
                               % (user, folder, timeout, len(msgs),
                                  [m["subject"] for m in msgs[:5]]))
            time.sleep(interval)

    def held(self):
        """Queue ids in the Postfix hold queue."""
        return sorted(self._queue_files("hold"))

    def _queue_files(self, *queues):
        ids = []
        for q in queues or ("maildrop", "incoming", "active", "deferred", "hold"):
            for _root, _dirs, files in os.walk(os.path.join(self.queue_dir, q)):
                ids.extend(files)
        return ids

    def queue(self):
        """The whole Postfix queue as postqueue -j reports it (list of dicts)."""
        res = _run(["postqueue", "-c", self.postfix_dir, "-j"])
        return [json.loads(line) for line in res.stdout.splitlines() if line.strip()]

    # ----------------------------------------------------------------- sending

    def send(self, to=None, subject=None, body="mail lab test\n", sender=None,
             port="smtp", auth=None, starttls=True, headers=None, timeout=15):
        """Send one mail into the lab over SMTP (CA verified); returns Message-ID.

        port: "smtp", "submission" or "smtps". auth: (user, password), or True
        for the sender's own lab credentials (needed on submission/smtps).
        """
        to = to or "monitor@" + DOMAIN
        sender = sender or "other@" + DOMAIN
        if auth is True:
            auth = (sender, self.users[sender])
        if auth is None and port in ("submission", "smtps"):
            auth = (sender, self.users[sender])
        msg = email.message.EmailMessage()
        msg["From"] = sender
        msg["To"] = to if isinstance(to, str) else ", ".join(to)
        msg["Subject"] = subject or "mail lab %s" % secrets.token_hex(6)
        msg["Date"] = email.utils.formatdate(localtime=True)
        msg["Message-ID"] = email.utils.make_msgid(domain=DOMAIN)
        for k, v in (headers or {}).items():
            msg[k] = v
        msg.set_content(body)
        ctx = self.ssl_context()
        if port == "smtps":
            client = smtplib.SMTP_SSL(self.host, self.ports["smtps"], timeout=timeout,
                                      context=ctx)
        else:
            client = smtplib.SMTP(self.host, self.ports[port], timeout=timeout)
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

    deliver = send

    # ------------------------------------------------------------------ faults

    def _load_faults(self):
        try:
            with open(self.faults_file) as fh:
                return {**NO_FAULTS, **json.load(fh)}
        except (OSError, ValueError):
            return dict(NO_FAULTS)

    def _save_faults(self, faults):
        _write(self.faults_file, json.dumps(faults, sort_keys=True) + "\n")

    def faults(self):
        """The faults that are set, e.g. {"path": "hold", "delay": 0, ...}."""
        return self._load_faults()

    def _apply_faults(self, new, force=False):
        old = self._load_faults()
        if force or old["path"] != new["path"]:
            # cleanup runs with max_use=1, so the next mail reads the new table
            _write(self._p("postfix", "header_checks"), HEADER_CHECKS[new["path"]])
        if force or old["junk"] != new["junk"]:
            _write(self._p("sieve", "10-faults.sieve"),
                   JUNK_SCRIPT_ON if new["junk"] else JUNK_SCRIPT_OFF)
            self._compile_sieve("10-faults.sieve")
        self._save_faults(new)
        if not force and old["imap_down"] != new["imap_down"]:
            self._write_listeners(imap=not new["imap_down"])
            self._doveadm("reload")
            self._wait_port(self.ports["imap"], up=not new["imap_down"])
            self._wait_port(self.ports["imaps"], up=not new["imap_down"])
        if new["path"] != "delay" or new["delay"] != old["delay"] or force:
            self._stop_releaser()
        if new["path"] == "delay" and (force or not self._releaser_alive()):
            self._start_releaser(new["delay"])

    def _wait_port(self, port, up, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                socket.create_connection((HOST, port), timeout=1).close()
                is_up = True
            except OSError:
                is_up = False
            if is_up == up:
                return
            time.sleep(0.05)
        raise LabError("port %s still %s after %ss" % (port, "down" if up else "up", timeout))

    def _set(self, **changes):
        new = {**self._load_faults(), **changes}
        self._apply_faults(new)

    def hold(self):
        """Accept mail but keep it in the hold queue (until release())."""
        self._set(path="hold", delay=0)

    def release(self):
        """Stop holding and deliver every held mail now."""
        self._set(path=None, delay=0)
        if self.held():
            _run(["postsuper", "-c", self.postfix_dir, "-H", "ALL"])
        _run(["postqueue", "-c", self.postfix_dir, "-f"])

    def drop(self):
        """Accept mail with 250 and throw it away (header_checks DISCARD)."""
        self._set(path="drop", delay=0)

    def delay(self, seconds):
        """Deliver every accepted mail no earlier than `seconds` after acceptance."""
        seconds = float(seconds)
        if seconds <= 0:
            return self._set(path=None, delay=0)
        self._set(path="delay", delay=seconds)

    def junk(self, on=True):
        """Deliver into the Junk folder instead of INBOX."""
        self._set(junk=bool(on))

    def imap_down(self):
        """IMAP and IMAPS refuse connections; SMTP, LMTP and POP3 keep working."""
        self._set(imap_down=True)

    def imap_up(self):
        self._set(imap_down=False)

    def reset(self):
        """Clear every fault, the Postfix queue, and every folder of every mailbox."""
        if self._load_faults() != NO_FAULTS:
            self._apply_faults(dict(NO_FAULTS))
        if self._queue_files():
            _run(["postsuper", "-c", self.postfix_dir, "-d", "ALL"], check=False)
        for user in self.users:
            if self._mailbox_dirty(user):
                self._wipe_mailbox(user)

    # ---------------------------------------------------------------- releaser

    def _releaser_pidfile(self):
        return self._p("run", "releaser.pid")

    def _releaser_alive(self):
        pid = _read_pid(self._releaser_pidfile())
        if not pid or not _pid_alive(pid):
            return False
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as fh:
                cmd = fh.read().decode(errors="replace")
        except OSError:
            return False
        return "releaser" in cmd and self.dir in cmd

    def _start_releaser(self, seconds):
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "releaser.py")
        log = open(self._p("log", "releaser.log"), "a")
        try:
            proc = subprocess.Popen(
                [sys.executable, script, "--dir", self.dir, "--seconds", str(seconds)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True, close_fds=True)
        finally:
            log.close()
        self._releaser = proc
        _write(self._releaser_pidfile(), "%d\n" % proc.pid)

    def _stop_releaser(self):
        pidfile = self._releaser_pidfile()
        if self._releaser_alive():
            pid = _read_pid(pidfile)
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline and _pid_alive(pid):
                if self._releaser is not None:
                    self._releaser.poll()
                time.sleep(0.02)
            if _pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
        if self._releaser is not None:
            try:
                self._releaser.wait(timeout=3)
            except subprocess.TimeoutExpired:
                pass
            self._releaser = None
        if os.path.exists(pidfile):
            os.unlink(pidfile)


def _unfold(value):
    return re.sub(r"\r?\n[ \t]+", " ", value or "").strip()
