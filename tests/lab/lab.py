"""A private Postfix + Dovecot mail lab (with an OAuth2 token service) on 127.0.0.1.

MailLab is a facade over the lab's parts, one module each:

    common.py   constants, LabError, Layout (the lab directory, ports, users)
    procs.py    process, port and file helpers (_run, _pick_ports, _kill_session, ...)
    tls.py      the lab CA and certificates
    postfix.py  Postfix: config, start/stop, queue, sending
    dovecot.py  Dovecot: config, start/stop; the mailboxes (fill, count, messages)
    faults.py   hold, release, drop, delay, junk, imap-down; the releaser process
    tokens.py   the OAuth2 token service process (tokenservice.py) and its test API

Everything lives in one directory (a temporary one by default, in memory
where /dev/shm will do: scratch_base; common.py lists what is in it).  Nothing here touches the system Postfix or Dovecot:
both daemons run from their own configuration, listen on 127.0.0.1 only, and
mail for any domain other than lab.test is refused at RCPT (there is no
outbound smtp transport).  Must run as root (Postfix and Dovecot need it to
switch users).
"""

import functools
import json
import os
import pwd
import secrets
import shutil
import socket
import sys
import tempfile
import time

from .browser import PACKAGES as BROWSER_PACKAGES

# Every name this module had before it was split stays importable from here.
from .common import (  # noqa: F401
    DEFAULT_DIR,
    DOMAIN,
    ECHO_USER,
    HOST,
    OAUTH2_PORT_NAME,
    PORT_NAMES,
    USER_NAMES,
    VMAIL_USER,
    LabError,
    Layout,
)
from .dovecot import FOLDERS, JUNK_SCRIPT_OFF, Dovecot, Mailboxes, _ensure_vmail_user, _unfold, _vmail  # noqa: F401
from .faults import HEADER_CHECKS, JUNK_SCRIPT_ON, NO_FAULTS, Faults  # noqa: F401
from .postfix import Postfix
from .procs import (  # noqa: F401
    _end_session,
    _kill_session,
    _pick_ports,
    _pid_alive,
    _port_is_free,
    _read_pid,
    _run,
    _session_pids,
    _tail,
    _wait_port,
    _write,
)
from .tls import TLS
from .tokens import TokenService

PACKAGES = ("postfix", "dovecot-core", "dovecot-imapd", "dovecot-pop3d",
            "dovecot-lmtpd", "dovecot-sieve", "openssl") + BROWSER_PACKAGES  # the report's tests look at pages


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


# A temporary lab directory goes to memory when there is a tmpfs with room for the
# largest test (a flood of 20,000 mails, Dovecot's index of it) that may hold programs
# (the sieve pipes): the daemons' many small writes and fsyncs then never wait behind
# other work on the disk.  An explicit $TMPDIR is followed as it is.
MEMORY_DIR = "/dev/shm"
MEMORY_DIR_ROOM = 1 << 30


def scratch_base(path=MEMORY_DIR, room=MEMORY_DIR_ROOM):
    """Where MailLab makes its temporary directory: *path* when it will do, else None
    (the system's temporary directory)."""
    if os.environ.get("TMPDIR"):
        return None
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    if st.f_flag & (os.ST_NOEXEC | os.ST_RDONLY) or st.f_bavail * st.f_frsize < room:
        return None
    return path


def _delegate(part, func):
    """A MailLab method that calls `func` of the component `part`."""
    @functools.wraps(func)
    def method(self, *args, **kwargs):
        return func(getattr(self, part), *args, **kwargs)
    return method


def _shared(name):
    """A MailLab attribute kept in the Layout the components share."""
    def get(self):
        return getattr(self.layout, name)

    def set(self, value):
        setattr(self.layout, name, value)
    return property(get, set)


def _path(name):
    return property(lambda self: getattr(self.layout, name),
                    doc="%s inside the lab directory" % "/".join(Layout.PATHS[name]))


class MailLab:
    """Private Postfix + Dovecot on 127.0.0.1.

    lab = MailLab(); lab.start(); ...; lab.stop()   or   with MailLab() as lab: ...

    Attributes (valid after start()): host, domain, dir, ports (dict with the
    keys smtp, submission, smtps, imap, imaps, pop3, pop3s), ca_file,
    ca_key_file, cert_file, key_file, users (address -> password).
    Parts: tls, postfix, dovecot, mailboxes, fault_control, tokens (the OAuth2
    token service: tokens.token_url, tokens.port, tokens.client(mailbox), ...).
    ports may also name "oauth2" (the token service's port) when given.
    """

    dir = _shared("dir")
    ports = _shared("ports")
    users = _shared("users")

    def __init__(self, dir=None, ports=None, keep=False, start_timeout=30.0):
        self.host = HOST
        self.domain = DOMAIN
        self.keep = keep
        self.start_timeout = start_timeout
        ports = dict(ports or {})
        self._explicit_oauth2 = ports.pop(OAUTH2_PORT_NAME, None)
        self._explicit_ports = ports or None
        if self._explicit_ports and set(self._explicit_ports) != set(PORT_NAMES):
            raise ValueError("ports must have exactly the keys %s (and may have %s)"
                             % (", ".join(PORT_NAMES), OAUTH2_PORT_NAME))
        self.layout = Layout(dir, self._explicit_ports, oauth2_port=self._explicit_oauth2)
        self._made_dir = False
        self.tls = TLS(self.layout)
        self.postfix = Postfix(self.layout, self.tls)
        self.dovecot = Dovecot(self.layout)
        self.mailboxes = Mailboxes(self.layout, self.dovecot)
        self.fault_control = Faults(self.layout, self.postfix, self.dovecot)
        self.tokens = TokenService(self.layout, self.tls)

    def _p(self, *parts):
        return self.layout.p(*parts)

    @classmethod
    def attach(cls, dir=DEFAULT_DIR):
        """A MailLab object for a lab started elsewhere (e.g. by the CLI)."""
        path = os.path.join(os.path.abspath(dir), "lab.json")
        try:
            with open(path) as fh:
                info = json.load(fh)
        except OSError as exc:
            raise LabError("no lab in %s (%s)" % (dir, exc)) from exc
        ports = dict(info["ports"])
        if info.get("oauth2"):
            ports[OAUTH2_PORT_NAME] = info["oauth2"]["port"]
        lab = cls(dir=info["dir"], ports=ports, keep=True)
        lab.users = dict(info["users"])
        return lab

    # --------------------------------------------------------------- describe

    def describe(self):
        """Everything a client needs: host, ports, ca_file, users, dir, oauth2
        (the token service: port, token_url, introspection_url)."""
        return {
            "host": self.host,
            "domain": self.domain,
            "ports": dict(self.ports),
            "ca_file": self.ca_file,
            "ca_key_file": self.ca_key_file,
            "users": dict(self.users),
            "echo": ECHO_USER,
            "dir": self.dir,
            "logs": {"postfix": self.postfix_log, "dovecot": self.dovecot_log,
                     "tokenservice": self.tokenservice_log},
            "oauth2": self.tokens.describe(),
        }

    env = describe

    def logs(self, lines=30):
        """Tail of the Postfix, Dovecot and token service logs (for error messages)."""
        out = []
        if not self.dir:
            return ""
        for path in (self.postfix_log, self.dovecot_log,
                     self._p("log", "dovecot-start.err"), self._p("log", "releaser.log"),
                     self.tokenservice_log):
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
        pf, dc = self.postfix.pid(), self.dovecot.pid()
        tokens_ok = self.tokens.alive() or not self.tokens.port  # a lab of before OAuth2
        return bool(pf and dc and _pid_alive(pf) and _pid_alive(dc) and tokens_ok)

    running = property(is_running)

    def start(self):
        """Make the sandbox, certificates and configs; start the token service and both daemons."""
        if os.geteuid() != 0:
            raise LabError("the mail lab must run as root (Postfix and Dovecot switch users)")
        for tool in ("postfix", "dovecot", "doveadm", "openssl", "sievec"):
            if not shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin:/usr/bin"):
                raise LabError("%s is not installed (run `python3 -m tests.lab install`)" % tool)
        _ensure_vmail_user()
        if self.dir is None:
            self.dir = tempfile.mkdtemp(prefix="cmr-lab-", dir=scratch_base())
            self._made_dir = True
        else:
            if self.is_running():
                raise LabError("a lab is already running in %s" % self.dir)
            if os.path.isdir(self.dir) and os.listdir(self.dir):
                if not (os.path.exists(self.json_file) or os.path.exists(self.faults_file)):
                    raise LabError("%s exists and is not a mail lab directory; "
                                   "not touching it" % self.dir)
                self.fault_control.releaser.stop()
                self._stop_daemons()
                shutil.rmtree(self.dir)
            os.makedirs(self.dir)
        os.chmod(self.dir, 0o755)  # postfix/vmail must traverse to the sockets
        if not self.users:
            self.users = {"%s@%s" % (u, DOMAIN): secrets.token_urlsafe(12)
                          for u in USER_NAMES}
        attempts = 1 if self._explicit_ports else 3
        last = None
        self.tls.make_ca()
        for _attempt in range(attempts):
            self._choose_ports()
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

    def _choose_ports(self):
        """Free ports for every mail port and the token service not given to __init__."""
        fixed = dict(self._explicit_ports or {})
        if self._explicit_oauth2:
            fixed[OAUTH2_PORT_NAME] = self._explicit_oauth2
        wanted = [n for n in PORT_NAMES + (OAUTH2_PORT_NAME,) if n not in fixed]
        ports = {**fixed, **_pick_ports(wanted, taken=fixed.values())}
        self.layout.oauth2_port = ports.pop(OAUTH2_PORT_NAME)
        self.ports = ports

    def _write_json(self):
        _write(self.json_file, json.dumps(self.describe(), indent=2, sort_keys=True) + "\n",
               mode=0o600)

    def stop(self, keep=None):
        """Stop both daemons, the token service and the releaser; remove the dir unless kept."""
        if not self.dir:
            return
        keep = self.keep if keep is None else keep
        self.fault_control.releaser.stop()
        self._stop_daemons()
        if not keep and os.path.isdir(self.dir):
            shutil.rmtree(self.dir, ignore_errors=True)

    def _write_config(self):
        for sub in ("postfix", "spool", "postfix-data", "dovecot",
                    "dovecot/run", "dovecot/state", "sieve", "mail", "log", "run"):
            os.makedirs(self._p(sub), exist_ok=True)
            os.chmod(self._p(sub), 0o755)
        pf = pwd.getpwnam("postfix")
        os.chown(self._p("postfix-data"), pf.pw_uid, pf.pw_gid)
        uid, gid = _vmail()
        os.chown(self.mail_dir, uid, gid)
        self.postfix.write_config()
        self.dovecot.write_config(uid, gid)
        for user in self.users:
            self.mailboxes.create(user)
        faults = self.fault_control
        if not os.path.exists(self.faults_file):
            faults.save(dict(NO_FAULTS))
        faults.apply(faults.load(), force=True)

    def _start_daemons(self):
        self.tokens.start()  # Dovecot asks it about every token
        self.dovecot.start()
        self.postfix.start()
        deadline = time.monotonic() + self.start_timeout
        waiting = dict(self.ports)
        sockets = self.dovecot.sockets()
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

    def _stop_daemons(self):
        pids = (self.postfix.stop(), self.dovecot.stop())
        # both masters are session leaders: whatever is left in their sessions is ours
        for pid in pids:
            if pid:
                _end_session(pid)
        self.tokens.stop()

    # ------------------------------------------------------------ TLS, mail

    make_cert = _delegate("tls", TLS.make_cert)
    ssl_context = _delegate("tls", TLS.ssl_context)

    send = deliver = _delegate("postfix", Postfix.send)
    pipe = _delegate("postfix", Postfix.pipe)
    alias_command = _delegate("postfix", Postfix.alias_command)
    held = _delegate("postfix", Postfix.held)
    queue = _delegate("postfix", Postfix.queue)
    _queue_files = _delegate("postfix", Postfix.queue_files)

    fill = _delegate("mailboxes", Mailboxes.fill)
    count = _delegate("mailboxes", Mailboxes.count)
    delete_folder = _delegate("mailboxes", Mailboxes.delete_folder)
    messages = _delegate("mailboxes", Mailboxes.messages)
    wait_for = _delegate("mailboxes", Mailboxes.wait_for)
    _maildir = _delegate("mailboxes", Mailboxes.maildir)
    _check_user = _delegate("mailboxes", Mailboxes.check_user)
    _doveadm = _delegate("dovecot", Dovecot.doveadm)
    sieve_pipe = _delegate("dovecot", Dovecot.sieve_pipe)

    def add_user(self, user, password):
        """Another mailbox (any password, e.g. non-ASCII); reloads Postfix."""
        if "@" not in user:
            user = "%s@%s" % (user, DOMAIN)
        self.users[user] = password
        self.dovecot.write_users()
        self.postfix.write_vmailbox()
        self.mailboxes.create(user)
        self.postfix.reload()
        self._write_json()
        self._wait_for_login(user, password)
        return user

    def _wait_for_login(self, user, password, timeout=20.0):
        """Dovecot may take a moment to see a changed passwd-file: wait until the user can log in."""
        deadline = time.monotonic() + timeout
        while True:
            res = self.dovecot.doveadm("auth", "test", "--", user, password, check=False)  # a password may start with "-"
            if res.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise LabError("new lab user %s cannot log in after %ss: %s" % (
                    user, timeout, (res.stderr or res.stdout).strip()[-500:]))
            time.sleep(0.1)

    # ------------------------------------------------------------------ faults

    def faults(self):
        """The faults that are set, e.g. {"path": "hold", "delay": 0, ...}."""
        return self.fault_control.load()

    hold = _delegate("fault_control", Faults.hold)
    release = _delegate("fault_control", Faults.release)
    drop = _delegate("fault_control", Faults.drop)
    delay = _delegate("fault_control", Faults.delay)
    junk = _delegate("fault_control", Faults.junk)
    imap_down = _delegate("fault_control", Faults.imap_down)
    imap_up = _delegate("fault_control", Faults.imap_up)
    clear = _delegate("fault_control", Faults.clear)

    def reset(self):
        """Clear every fault, the Postfix queue, every folder of every mailbox,
        and the token service's tokens, revocations and counters."""
        self.fault_control.clear()
        self.tokens.reset()
        self.postfix.clear_queue()
        for user in self.users:
            if self.mailboxes.dirty(user):
                self.mailboxes.wipe(user)


for _name in Layout.PATHS:  # ca_file, postfix_dir, queue_dir, ... (read-only)
    setattr(MailLab, _name, _path(_name))
del _name
