"""Process, port and file helpers of the mail lab (no lab state here).

_run           run a command, LabError on failure or timeout
_write, _tail  write a file atomically; the last lines of a log
_pid_alive, _read_pid, _session_pids, _kill_session, _end_session
_port_is_free, _pick_ports, _wait_port
"""

import os
import random
import signal
import socket
import subprocess
import time

from .common import HOST, LabError


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


def _write(path, text, mode=0o644, group=None):
    """Write a file atomically (temp file + rename), given to *group* (a gid) before it takes
    its place, so a reader never sees it with the wrong owner."""
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "w") as fh:
        fh.write(text)
    os.chmod(tmp, mode)
    if group is not None:
        os.chown(tmp, 0, group)
    os.replace(tmp, path)


def _tail(path, lines=30):
    try:
        with open(path, errors="replace") as fh:
            return "".join(fh.readlines()[-lines:])
    except OSError:
        return ""


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


def _wait_port(port, up, timeout=10.0):
    """Wait until 127.0.0.1:port accepts connections (up) or refuses them."""
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


def _end_session(pid, wait=5.0):
    """Give a session leader that was asked to stop `wait` seconds, then kill
    whatever is left in its session (a daemon master and its children)."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and _pid_alive(pid):
        time.sleep(0.05)
    _kill_session(pid)
