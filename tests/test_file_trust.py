"""The check trusts only what it wrote itself or what the admin made private.

- The token endpoint may redirect only to the same scheme, host and port: a
  redirect elsewhere (plain http://, another host) is CRITICAL naming the
  Location, and nothing is sent there.
- A state directory others may write to is UNKNOWN with the fix (chmod 700).
- Password, client secret, token and refresh token files: a FIFO, a device,
  a symlink to a FIFO are refused at once (never read, never waited on); a
  file its group or others may read is UNKNOWN with the fix (chmod 600).
- The token cache is never read through a symlink, and damage in it (JSON
  nested too deep) is set aside, never a traceback.

The real command runs against the lab or fault servers (tests/faultservers/);
files owned by other users are in tests/test_ownership.py.
"""

import json
import os
import re
import signal
import stat
import time

import pytest

from check_mail_roundtrip import oauth2, state
from tests import faultservers as fs
from tests.test_cli import MONITOR, _run
from tests.test_network_faults import assert_line, checker
from tests.test_oauth2_faults import first_run_line, https, with_endpoint

BASE = ["-H", "127.0.0.1", "--from", MONITOR, "-t", "5"]
ENV = {"CHECK_MAIL_ROUNDTRIP_IMAP_PASSWORD": "x"}
OPEN_DIR = ("state directory %s can be written by %s (mode %04o): another user could put a secret, state or "
            "lock file there and make the check report what they like; make it the owner's alone: chmod 700 %s")


def unknown(text):
    return "MAIL_ROUNDTRIP UNKNOWN - %s\n" % text


# -- the token endpoint's redirects ------------------------------------------------------------------

@pytest.mark.parametrize("code, where", [(302, "http://127.0.0.1:{plain}/token"),
                                         (307, "https://localhost:{tls}/token")])
def test_a_token_endpoint_redirecting_elsewhere_is_not_followed(lab, tmp_path, code, where):
    """Followed, a 302 to http:// fetched the token over plain HTTP and the check used it."""
    token = json.dumps({"access_token": "planted-token", "token_type": "Bearer", "expires_in": 3600})
    plain = fs.FaultServer(fs.http_answer(200, "application/json", token))
    srv = https(lab, None)
    url, location = "https://127.0.0.1:%d/token" % srv.port, where.format(plain=plain.port, tls=srv.port)
    srv.handler = fs.http_answer(code, "text/plain", "moved", location=location)
    with plain, srv:
        r = with_endpoint(lab, tmp_path, url)
    assert plain.received == [] and srv.received == ["POST /token HTTP/1.1"], r
    words = "%s redirects to %s (HTTP %d): not followed (another scheme, host or port)" % (url, location, code)
    assert_line(r, first_run_line(re.escape(words)), budget=6)
    assert "planted-token" not in r.stdout + r.stderr


class _Deadline:
    def left(self):
        return 5.0


def test_a_redirect_to_the_same_endpoint_is_followed_with_the_form():
    token = json.dumps({"access_token": "good-token", "expires_in": 3600})
    answers = [fs.http_answer(308, "text/plain", "", location="/v2/token"),
               fs.http_answer(200, "application/json", token)]
    with fs.FaultServer(lambda conn: answers.pop(0)(conn)) as srv:
        source = oauth2.GrantToken("http://127.0.0.1:%d/token" % srv.port, "app", "s3cret")
        answer = source._post({"grant_type": "client_credentials", "client_id": "app"}, _Deadline())
    assert answer["access_token"] == "good-token"
    assert srv.received == ["POST /token HTTP/1.1", "POST /v2/token HTTP/1.1"]


# -- the state directory -----------------------------------------------------------------------------

@pytest.mark.parametrize("mode", [0o777, 0o1777])
def test_a_state_directory_anyone_may_write_to_is_unknown(tmp_path, mode):
    directory = tmp_path / "state"
    directory.mkdir()
    os.chmod(directory, mode)
    r = _run(BASE + ["--state-dir", str(directory)], env=ENV)
    assert (r.rc, r.stdout) == (3, unknown(OPEN_DIR % (directory, "anyone", mode, directory))), r
    assert os.listdir(directory) == []  # no lock, no secret planted or read


def test_a_state_directory_a_shared_group_may_write_to_is_unknown(tmp_path):
    """nogroup is the primary group of other system users too (e.g. _apt): not the owner's own."""
    directory = tmp_path / "state"
    directory.mkdir()
    os.chown(directory, 65534, 65534)
    os.chmod(directory, 0o770)
    assert state.open_to_others(str(directory)) == OPEN_DIR % (directory, "its group nogroup", 0o770, directory)
    r = _run(BASE + ["--state-dir", str(directory)], env=ENV)
    assert (r.rc, r.stdout) == (3, unknown(OPEN_DIR % (directory, "its group nogroup", 0o770, directory))), r


def test_the_owners_private_group_may_write_and_so_may_nobody_else(tmp_path):
    import grp
    import pwd
    if grp.getgrgid(0).gr_mem or any(p.pw_gid == 0 and p.pw_uid != 0 for p in pwd.getpwall()):
        pytest.skip("the group root is not root's alone here")
    directory = tmp_path / "state"
    directory.mkdir()
    for mode in (0o700, 0o750, 0o755, 0o770, 0o2770):
        os.chmod(directory, mode)
        assert state.open_to_others(str(directory)) is None, oct(mode)


# -- password, client secret and token files -----------------------------------------------------------

OPTIONS = {
    "imap": (["--imap-password-file"], "IMAP password file"),
    "smtp": (["--smtp-user", MONITOR, "--smtp-password-file"], "SMTP password file"),
    "pop3": (["--collect", "pop3", "--pop3-password-file"], "POP3 password file"),
    "client secret": (["--imap-auth", "oauth2", "--oauth2-token-url", "https://127.0.0.1:1/token",
                       "--oauth2-client-id", "app", "--oauth2-client-secret-file"], "OAuth2 client secret file"),
    "token": (["--imap-auth", "oauth2", "--oauth2-token-file"], "token file"),
    "refresh token": (["--imap-auth", "oauth2", "--oauth2-token-url", "https://127.0.0.1:1/token",
                       "--oauth2-client-id", "app", "--oauth2-refresh-token-file"], "refresh token file"),
}


def _with_file(tmp_path, option, path):
    words, name = OPTIONS[option]
    env = dict(ENV, CHECK_MAIL_ROUNDTRIP_POP3_PASSWORD="x")
    return _run(BASE + ["--imap-port", str(fs.free_port()), "--state-dir", str(tmp_path / "state"),
                        *words, str(path)], env=env, timeout=30), name


@pytest.mark.parametrize("mode, who", [(0o640, "its group"), (0o604, "others"), (0o620, "its group")])
@pytest.mark.parametrize("option", sorted(OPTIONS))
def test_a_secret_file_its_group_or_others_may_use_is_unknown(tmp_path, option, mode, who):
    path = tmp_path / "secret-file"
    path.write_text("s3cret-value\n")
    os.chmod(path, mode)
    r, name = _with_file(tmp_path, option, path)
    verb = "written" if mode == 0o620 else "read"
    assert (r.rc, r.stdout) == (3, unknown("%s %s can be %s by %s (mode %04o): make it the owner's alone: "
                                           "chmod 600 %s" % (name, path, verb, who, mode, path))), r
    assert "s3cret-value" not in r.stdout + r.stderr


def _fifo(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    return fifo


def _link_to_fifo(tmp_path):
    link = tmp_path / "link"
    os.symlink(_fifo(tmp_path), link)
    return link


@pytest.mark.parametrize("make, kind", [(lambda tmp_path: "/dev/zero", "a character device"),
                                        (_fifo, "a FIFO"), (_link_to_fifo, "a FIFO")],
                         ids=["dev-zero", "fifo", "symlink-to-fifo"])
def test_a_password_file_that_is_no_regular_file_is_refused_at_once(tmp_path, make, kind):
    """/dev/zero was read until memory ran out, a FIFO without a writer was waited on for ever."""
    path = make(tmp_path)
    r, name = _with_file(tmp_path, "imap", path)
    assert (r.rc, r.stdout) == (3, unknown("usage error: cannot read %s %s: not a regular file (%s) (see --help)"
                                           % (name, path, kind))), r
    assert r.seconds < 5, r


def test_a_token_file_that_is_a_fifo_is_refused_at_once(tmp_path):
    path = _fifo(tmp_path)
    r, name = _with_file(tmp_path, "token", path)
    assert r.rc == 2 and r.line.startswith("MAIL_ROUNDTRIP CRITICAL - OAuth2 token failed: cannot read %s %s: "
                                           "not a regular file (a FIFO), " % (name, path)), r
    assert r.seconds < 5, r


def test_a_password_file_larger_than_4_kib_is_refused(tmp_path):
    path = tmp_path / "big"
    path.write_bytes(b"x" * 5000)
    os.chmod(path, 0o600)
    r, name = _with_file(tmp_path, "imap", path)
    assert (r.rc, r.stdout) == (3, unknown("usage error: cannot read %s %s: larger than 4096 bytes (see --help)"
                                           % (name, path))), r


@pytest.mark.parametrize("make", [lambda tmp_path: "/dev/zero", _fifo], ids=["dev-zero", "fifo"])
def test_an_extra_opts_file_that_is_no_regular_file_is_refused_at_once(tmp_path, make):
    path = make(tmp_path)
    r = _run(["--extra-opts=@%s" % path], timeout=30)
    kind = "a character device" if path == "/dev/zero" else "a FIFO"
    assert (r.rc, r.stdout) == (3, unknown("usage error: --extra-opts: cannot read %s: not a regular file (%s)"
                                           % (path, kind))), r
    assert r.seconds < 5, r


# -- the token cache -----------------------------------------------------------------------------------

def test_a_token_cache_planted_as_a_symlink_is_set_aside_not_followed(lab, tmp_path):
    """Read through the link, the planted token was used to log in (and the endpoint was not asked)."""
    url = "https://127.0.0.1:%d/token" % fs.free_port()  # nobody answers: only a cached token would do
    state_dir = checker(lab, tmp_path).state_dir
    os.makedirs(state_dir, mode=0o700)
    cache = oauth2.GrantToken(url, "monitor-app", "s3cret-client", "mail", cache_dir=state_dir).cache
    planted = tmp_path / "planted.json"
    text = json.dumps({"access_token": "planted-token", "issued_at": time.time(), "expires_at": time.time() + 3600})
    planted.write_text(text)
    os.symlink(planted, cache)
    r = with_endpoint(lab, tmp_path, url, "-v")
    assert r.rc == 2 and re.fullmatch(first_run_line("connection refused"), r.full_line), r
    assert not os.path.lexists(cache) and planted.read_text() == text
    aside = [n for n in os.listdir(state_dir) if n.startswith(os.path.basename(cache) + ".damaged-")]
    assert len(aside) == 1 and os.path.islink(os.path.join(state_dir, aside[0])), os.listdir(state_dir)
    assert "OAuth2: token cache is a symlink (not followed); kept aside as %s, started afresh" % aside[0] in r.stdout


def test_a_token_cache_nested_too_deep_is_set_aside(tmp_path):
    source = oauth2.GrantToken("https://127.0.0.1:1/token", "app", "secret", cache_dir=str(tmp_path))
    with open(source.cache, "w") as f:
        f.write("[" * 50000)
    assert source._cached() is None
    assert not os.path.exists(source.cache)
    assert [n.split(".damaged-")[0] for n in os.listdir(tmp_path)] == [os.path.basename(source.cache)]
    assert source.notes[0].startswith("OAuth2: token cache is damaged (nested too deep); kept aside as ")


def _within(seconds, work):
    """work(), or TimeoutError when it takes more than *seconds* (opening a FIFO waits for ever)."""
    def expired(signum, frame):
        raise TimeoutError("still waiting after %ds" % seconds)
    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        return work()
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_a_token_cache_that_is_a_fifo_is_set_aside_at_once(tmp_path):
    source = oauth2.GrantToken("https://127.0.0.1:1/token", "app", "secret", cache_dir=str(tmp_path))
    os.mkfifo(source.cache, 0o600)
    assert _within(5, source._cached) is None
    assert source.notes[0].startswith("OAuth2: token cache is not a regular file (a FIFO); kept aside as ")
    (aside,) = os.listdir(tmp_path)
    assert stat.S_ISFIFO(os.lstat(tmp_path / aside).st_mode)


def test_reading_private_files_leaves_no_descriptor_open(tmp_path):
    from check_mail_roundtrip import private_file
    path = tmp_path / "pw"
    path.write_text("pw\n")
    before = len(os.listdir("/proc/self/fd"))
    for mode in (0o600, 0o640) * 10:
        os.chmod(path, mode)
        try:
            assert private_file.read(str(path), "password file", 4096) == b"pw\n"
        except private_file.Refused:
            assert mode == 0o640
        with pytest.raises(private_file.Unfit):
            private_file.read("/dev/zero", "password file", 4096)
    assert len(os.listdir("/proc/self/fd")) == before
