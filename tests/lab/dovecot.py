"""The mail lab's private Dovecot: configuration, start/stop, and the mailboxes.

Dovecot(layout)    dovecot/dovecot.conf, listeners.conf (IMAP, IMAPS, POP3,
                   POP3S on 127.0.0.1), the users file, the global sieve
                   scripts (echo address, junk fault), LMTP and SASL sockets
                   for Postfix; start, stop, reload, doveadm.
                   Logins: PLAIN and LOGIN with the users' passwords (the
                   passwd-file passdb), XOAUTH2 and OAUTHBEARER with tokens of
                   the lab's token service (the oauth2 passdb, oauth2.conf.ext:
                   RFC 7662 introspection over HTTPS, verified with the lab
                   CA).  No auth cache: a revoked token fails at once.
Mailboxes(layout, dovecot)
                   the users' Maildirs (owned by the "vmail" system user):
                   create, wipe, delete_folder, fill, count, messages, wait_for.
"""

import email.utils
import grp
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import time

from .common import DOMAIN, ECHO_USER, HOST, IPV6_HOST, NO_UIDPLUS_HOST, PLAIN_HOST, VMAIL_USER, LabError, ipv6_loopback
from .procs import _pid_alive, _read_pid, _run, _tail, _write

# Folders every mailbox has from the start (name -> special-use flag).
FOLDERS = {"Junk": "\\Junk"}
# The faults' sieve script while no junk fault is set (see faults.py).
JUNK_SCRIPT_OFF = "# mail lab: no junk fault set\n"


# Dovecot 2.3's capabilities after login, less UIDPLUS (for the listener on NO_UIDPLUS_HOST)
NO_UIDPLUS_CAPABILITY = (
    "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT SORT=DISPLAY THREAD=REFERENCES THREAD=REFS "
    "THREAD=ORDEREDSUBJECT MULTIAPPEND URL-PARTIAL CATENATE UNSELECT CHILDREN NAMESPACE LIST-EXTENDED "
    "I18NLEVEL=1 CONDSTORE QRESYNC ESEARCH ESORT SEARCHRES WITHIN CONTEXT=SEARCH LIST-STATUS BINARY MOVE "
    "SNIPPET=FUZZY PREVIEW=FUZZY PREVIEW STATUS=SIZE SAVEDATE LITERAL+ NOTIFY SPECIAL-USE")
# ... and less IDLE and SPECIAL-USE, with UIDPLUS (for the listener on PLAIN_HOST): a client must
# poll for new mail and find the Junk folder by its name
PLAIN_CAPABILITY = " ".join(
    [c for c in NO_UIDPLUS_CAPABILITY.split() if c not in ("IDLE", "SPECIAL-USE")] + ["UIDPLUS"])


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


def _vmail():
    pw = pwd.getpwnam(VMAIL_USER)
    return pw.pw_uid, pw.pw_gid


# The system's Python (Debian's), which the vmail user can run wherever the test
# virtualenv lives.
SYSTEM_PYTHON = "/usr/bin/python3"

# Writes Mailboxes.fill()'s Maildir files, run as the vmail user (so the files are
# its own, 0600, as if delivered, without a chown per file: on a slow disk that
# halves the time of a flood of 20,000).  Its parameters come as JSON on stdin.
_FILL_WRITER = r"""
import json, os, sys
s = json.load(sys.stdin)
create = os.O_WRONLY | os.O_CREAT | os.O_EXCL
for i in range(s["n"]):
    title = s["subject"] % i if s["subject"] is not None else "filler %d %s" % (i, s["token"])
    head = ("From: filler@%s\nTo: %s\nSubject: %s\nMessage-ID: <filler.%s.%d@%s>\nDate: %s\n"
            "MIME-Version: 1.0\nContent-Type: text/plain\n\n"
            % (s["domain"], s["user"], title, s["token"], i, s["domain"], s["date"]))
    data = (head + s["pad"][:max(0, s["size"] - len(head))]).encode()
    name = "%d.M%dP%dR%s.%s,S=%d:2,%s" % (s["now"], i, s["pid"], s["token"], s["host"], len(data), s["flags"])
    fd = os.open(name, create, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
"""


def _unfold(value):
    return re.sub(r"\r?\n[ \t]+", " ", value or "").strip()


class Dovecot:
    def __init__(self, layout):
        self.layout = layout
        self.pipes = {}  # address -> (program name, args): see sieve_pipe()

    # ---------------------------------------------------------------- config

    def write_config(self, uid, gid):
        lay = self.layout
        d, p = lay.dir, lay.ports
        name = os.path.basename(d)
        _write(lay.dovecot_conf, f"""\
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
# one POP3 session per maildrop, as many servers do: a second one gets -ERR [IN-USE]
pop3_lock_session = yes
auth_mechanisms = plain login xoauth2 oauthbearer
# no caching of logins: a revoked or expired token must fail at once
auth_cache_size = 0
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
  mechanisms = plain login
  args = scheme=PLAIN username_format=%u {d}/dovecot/users
}}
passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {lay.oauth2_conf}
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {d}/dovecot/users
  default_fields = uid={uid} gid={gid} home={d}/mail/%d/%n
}}
namespace inbox {{
  inbox = yes
  separator = /
  # made by Mailboxes.create for every user (not auto: a test may take it away)
  mailbox Junk {{
    special_use = \\Junk
  }}
}}
service auth {{
  unix_listener auth-postfix {{
    mode = 0600
    user = postfix
    group = postfix
  }}
}}
# no auth penalty: one test's failed logins must not slow the next test's
# (a failure still gets its auth_failure_delay of 2 s)
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
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
  sieve_before3 = {d}/sieve/20-pipes.sieve
  sieve_extensions = +editheader
  sieve_plugins = sieve_extprograms
  sieve_global_extensions = +vnd.dovecot.pipe
  sieve_pipe_bin_dir = {d}/sieve-pipe
  sieve_redirect_duplicate_period = 0
  sieve_redirect_envelope_from = recipient
}}
# IMAP on {NO_UIDPLUS_HOST}: the same mailboxes, from a server that lacks UIDPLUS
local {NO_UIDPLUS_HOST} {{
  protocol imap {{
    imap_capability = {NO_UIDPLUS_CAPABILITY}
  }}
}}
# IMAP on {PLAIN_HOST}: the same mailboxes, from a server without IDLE and SPECIAL-USE
local {PLAIN_HOST} {{
  protocol imap {{
    imap_capability = {PLAIN_CAPABILITY}
  }}
}}
!include {d}/dovecot/listeners.conf
""", mode=0o644)
        self.write_listeners(imap=True)
        self.write_users()
        self.write_oauth2()
        _write(lay.p("sieve", "00-echo.sieve"), f"""\
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
        if not os.path.exists(lay.p("sieve", "10-faults.sieve")):
            _write(lay.p("sieve", "10-faults.sieve"), JUNK_SCRIPT_OFF)
        os.makedirs(lay.p("sieve-pipe"), mode=0o755, exist_ok=True)
        self.write_sieve_pipes()
        self.compile_sieve("00-echo.sieve")
        self.compile_sieve("10-faults.sieve")

    def write_users(self):
        """The passwd-file of the lab users (readable by Dovecot's auth)."""
        path = self.layout.p("dovecot", "users")
        _write(path,
               "".join("%s:{PLAIN}%s::::::\n" % (u, pw)
                       for u, pw in sorted(self.layout.users.items())),
               mode=0o640, group=grp.getgrnam("dovecot").gr_gid)

    def write_oauth2(self):
        """The oauth2 passdb's settings: introspection at the lab's token service."""
        lay = self.layout
        _write(lay.oauth2_conf, f"""\
# mail lab: tokens are checked by the lab's token service (tests/lab/tokenservice.py)
introspection_mode = post
introspection_url = https://{HOST}:{lay.oauth2_port}/introspect
force_introspection = yes
username_attribute = username
active_attribute = active
active_value = true
tls_ca_cert_file = {lay.ca_file}
timeout_msecs = 10000
""")

    def write_listeners(self, imap=True):
        p = self.layout.ports
        imap_port, imaps_port = (p["imap"], p["imaps"]) if imap else (0, 0)
        v6 = ", " + IPV6_HOST if ipv6_loopback() else ""
        _write(self.layout.p("dovecot", "listeners.conf"), f"""\
# IMAP listeners get port 0 while the imap-down fault is set
service imap-login {{
  inet_listener imap {{
    address = {HOST}, {NO_UIDPLUS_HOST}, {PLAIN_HOST}{v6}
    port = {imap_port}
  }}
  inet_listener imaps {{
    address = {HOST}, {NO_UIDPLUS_HOST}, {PLAIN_HOST}{v6}
    port = {imaps_port}
    ssl = yes
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    address = {HOST}{v6}
    port = {p['pop3']}
  }}
  inet_listener pop3s {{
    address = {HOST}{v6}
    port = {p['pop3s']}
    ssl = yes
  }}
}}
""")

    def sieve_pipe(self, address, program, args):
        """Mail for *address* goes to *program* (run as the mail user) by Sieve's
        vnd.dovecot.pipe, with *args*; "${sender}" in them is the envelope sender.
        If the program fails, the mail is kept in *address*'s INBOX."""
        name = os.path.basename(program)
        link = self.layout.p("sieve-pipe", name)
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink(program, link)
        self.pipes[address] = (name, list(args))
        self.write_sieve_pipes()

    def write_sieve_pipes(self):
        lines = ['# mail lab: addresses piped to programs (Dovecot.sieve_pipe)',
                 'require ["vnd.dovecot.pipe", "envelope", "variables"];']
        for address, (name, args) in sorted(self.pipes.items()):
            quoted = ", ".join('"%s"' % a.replace("\\", "\\\\").replace('"', '\\"') for a in args)
            lines += ['if envelope :is "to" "%s" {' % address,
                      '  set "sender" "";',
                      '  if envelope :matches "from" "*" { set "sender" "${1}"; }',
                      '  pipe "%s" [%s];' % (name, quoted),
                      '  discard;',
                      '  stop;',
                      '}']
        self.write_sieve("20-pipes.sieve", "\n".join(lines) + "\n")

    def write_sieve(self, name, text):
        """A global sieve script, compiled at once."""
        _write(self.layout.p("sieve", name), text)
        self.compile_sieve(name)

    def compile_sieve(self, name):
        # sievec writes the .svbin next to the script, newer than the script,
        # so the LMTP process never runs a stale binary
        _run(["sievec", "-c", self.layout.dovecot_conf, self.layout.p("sieve", name)])

    # ------------------------------------------------------------ start/stop

    def doveadm(self, *args, check=True, timeout=120):
        return _run(["doveadm", "-c", self.layout.dovecot_conf, *args], check=check,
                    timeout=timeout)

    def pid(self):
        """The master's pid from its pid file (None when there is none)."""
        return _read_pid(os.path.join(self.layout.dovecot_run, "master.pid"))

    def start(self):
        err = self.layout.p("log", "dovecot-start.err")
        with open(err, "w") as fh:
            res = subprocess.run(["dovecot", "-c", self.layout.dovecot_conf],
                                 stdin=subprocess.DEVNULL, stdout=fh, stderr=fh,
                                 timeout=30)
        if res.returncode != 0:
            raise LabError("dovecot did not start: %s" % _tail(err, 10).strip())

    def stop(self):
        """SIGTERM to a running master; returns its pid (None: none known)."""
        pid = self.pid()
        if pid and _pid_alive(pid):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        return pid

    def reload(self):
        self.doveadm("reload")

    def sockets(self):
        """The sockets Postfix needs: LMTP delivery and SASL auth."""
        run = self.layout.dovecot_run
        return [os.path.join(run, "lmtp"), os.path.join(run, "auth-postfix")]


class Mailboxes:
    """The lab users' Maildirs, as files and as Dovecot sees them."""

    def __init__(self, layout, dovecot):
        self.layout = layout
        self.dovecot = dovecot

    def _user_home(self, user):
        local, _, dom = user.partition("@")
        return os.path.join(self.layout.mail_dir, dom, local)

    def maildir(self, user, folder="INBOX"):
        root = os.path.join(self._user_home(user), "Maildir")
        if folder.upper() == "INBOX":
            return root
        return os.path.join(root, "." + folder.replace("/", "."))

    def check_user(self, user):
        users = self.layout.users
        if "@" not in user:
            user = "%s@%s" % (user, DOMAIN)
        if user not in users:
            raise LabError("unknown lab user %s (have: %s)" % (user, ", ".join(users)))
        return user

    def create(self, user):
        """Maildir with INBOX and the special-use folders, owned by vmail."""
        uid, gid = _vmail()
        home = self._user_home(user)
        root = os.path.join(home, "Maildir")
        made = []
        for path in (os.path.dirname(home), home, root):
            if not os.path.isdir(path):
                os.mkdir(path, 0o700)
                made.append(path)
        for folder in ["INBOX", *FOLDERS]:
            md = self.maildir(user, folder)
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

    def dirty(self, user):
        """Does the mailbox hold any message, or a folder a test made?"""
        root = self.maildir(user)
        try:
            entries = list(os.scandir(root))
        except FileNotFoundError:
            return True
        folders = {"." + f for f in FOLDERS}
        for e in entries:
            if e.name.startswith(".") and e.is_dir() and e.name not in folders:
                return True  # a folder made by a test
        for folder in ["INBOX", *FOLDERS]:
            md = self.maildir(user, folder)
            for sub in ("cur", "new", "tmp"):
                try:
                    with os.scandir(os.path.join(md, sub)) as it:
                        if next(it, None) is not None:
                            return True
                except FileNotFoundError:
                    return True
        return False

    def wipe(self, user):
        """Remove every message and folder; keep the uidvalidity counter."""
        root = self.maildir(user)
        if os.path.isdir(root):
            for e in os.scandir(root):
                if e.name.startswith("dovecot-uidvalidity"):
                    continue
                if e.is_dir(follow_symlinks=False):
                    shutil.rmtree(e.path, ignore_errors=True)
                else:
                    os.unlink(e.path)
        self.create(user)

    def delete_folder(self, user, folder):
        """Remove *folder* and the mail in it (e.g. a user without a Junk folder)."""
        self.dovecot.doveadm("mailbox", "delete", "-s", "-u", self.check_user(user), folder)

    def fill(self, user, n, folder="INBOX", size=600, seen=False, subject=None):
        """Put n filler messages into a folder (Maildir files, then indexed);
        *subject*: their Subject, with %d for the message's number."""
        user = self.check_user(user)
        md = self.maildir(user, folder)
        if not os.path.isdir(os.path.join(md, "cur")):
            self.dovecot.doveadm("mailbox", "create", "-u", user, folder, check=False)
        uid, gid = _vmail()
        now = int(time.time())
        pad_line = "filler text for the mail lab, nothing to see here.\n"
        spec = {"n": int(n), "subject": subject, "token": secrets.token_hex(4), "domain": DOMAIN, "user": user,
                "date": email.utils.formatdate(now, localtime=False), "now": now, "pid": os.getpid(),
                "host": "lab%d" % os.getpid(), "flags": "S" if seen else "", "size": size,
                "pad": pad_line * (max(0, size) // len(pad_line) + 1)}
        res = subprocess.run([SYSTEM_PYTHON, "-I", "-c", _FILL_WRITER], input=json.dumps(spec), text=True,
                             capture_output=True, cwd=os.path.join(md, "cur"), user=uid, group=gid,
                             extra_groups=[], timeout=300)
        if res.returncode != 0:
            raise LabError("filling %s/%s failed: %s" % (user, folder, res.stderr.strip()[-2000:]))
        self.count(user, folder)  # let Dovecot index the new files now

    def count(self, user, folder="INBOX"):
        """(total, unseen) messages in a folder, as Dovecot sees them."""
        user = self.check_user(user)
        res = self.dovecot.doveadm("-f", "tab", "mailbox", "status", "-u", user,
                                   "messages unseen", folder)
        lines = res.stdout.strip().splitlines()
        head, values = lines[0].split("\t"), lines[1].split("\t")
        row = dict(zip(head, values))
        return int(row["messages"]), int(row["unseen"])

    def messages(self, user, folder="INBOX"):
        """[{"uid", "subject", "message_id", "flags": set}] of a folder."""
        user = self.check_user(user)
        res = self.dovecot.doveadm("-f", "json", "fetch", "-u", user,
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
