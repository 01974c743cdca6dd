"""Headless Chromium for tests that look at a page as a person would.

``install()`` installs Debian's chromium (and a font) when missing, as root;
``screenshot(path, png)`` renders a local file into a PNG and ``dump_dom(path)``
returns the DOM Chromium built from it; ``png_pixels(png)`` decodes a PNG with
the standard library only (zlib, struct), so a test can tell a blank
screenshot from a drawn one.  Every Chromium run is bounded in time.
"""

import itertools
import os
import shutil
import struct
import subprocess
import tempfile
import zlib

from . import packages

PACKAGES = ("chromium", "fonts-dejavu-core")
TIMEOUT = 90.0
WINDOW = (1200, 2000)


class BrowserError(RuntimeError):
    """Chromium is missing or did not render the page."""


def install(verbose=False):
    """Install chromium and fonts-dejavu-core if missing (as root); starts nothing."""
    return packages.ensure(PACKAGES, verbose=verbose)


def _chromium(*args, window=WINDOW):
    """Run headless Chromium with *args*; its stdout.  A profile directory of its own, removed after."""
    exe = shutil.which("chromium")
    if not exe:
        raise BrowserError("chromium is not installed: python3 -m tests.lab install (as root)")
    profile = tempfile.mkdtemp(prefix="report-chromium-")
    argv = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--user-data-dir=" + profile, "--window-size=%d,%d" % window,
            "--virtual-time-budget=1000", *args]
    try:
        res = subprocess.run(argv, capture_output=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL,
                             env=dict(os.environ, HOME=profile))
    except subprocess.TimeoutExpired as exc:
        raise BrowserError("chromium did not finish within %gs" % TIMEOUT) from exc
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    if res.returncode != 0:
        raise BrowserError("chromium exited %d: %s" % (res.returncode, res.stderr.decode("utf-8", "replace")[-2000:]))
    return res.stdout.decode("utf-8", "replace")


def screenshot(path, png, window=WINDOW):
    """Render the local file *path* into the PNG file *png*."""
    _chromium("--hide-scrollbars", "--screenshot=" + os.path.abspath(png),
              "file://" + os.path.abspath(path), window=window)
    if not os.path.isfile(png):
        raise BrowserError("chromium wrote no screenshot of %s" % path)


def dump_dom(path):
    """The DOM Chromium built from the local file *path*, serialised as HTML."""
    return _chromium("--dump-dom", "file://" + os.path.abspath(path))


def screenshot_url(url, png, window=WINDOW):
    """Render the page at *url* (e.g. a server on loopback) into the PNG file *png*."""
    _chromium("--hide-scrollbars", "--screenshot=" + os.path.abspath(png), url, window=window)
    if not os.path.isfile(png):
        raise BrowserError("chromium wrote no screenshot of %s" % url)


def dump_dom_url(url, window=WINDOW):
    """The DOM Chromium built from the page at *url*, serialised as HTML."""
    return _chromium("--dump-dom", url, window=window)


def _up(line, prev):
    """The bytes of *line* plus those of *prev*, each modulo 256 (PNG filter 2), a whole row at once."""
    n = len(line)
    high, low = int.from_bytes(b"\x80" * n, "big"), int.from_bytes(b"\x7f" * n, "big")
    a, b = int.from_bytes(line, "big"), int.from_bytes(prev, "big")
    return bytearray((((a & low) + (b & low)) ^ ((a ^ b) & high)).to_bytes(n, "big"))


def _sub(line, bpp):
    """PNG filter 1: each byte plus the one *bpp* before it, running; a channel at a time."""
    out = bytearray(len(line))
    for c in range(bpp):
        out[c::bpp] = bytes(map((255).__and__, itertools.accumulate(line[c::bpp])))
    return out


def _paeth_byte(a, b, c):
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def _unfilter(kind, line, prev, bpp):
    """One row of a PNG without its filter *kind* (0 to 4), given the row above, *prev*."""
    if kind == 0:
        return line
    if kind == 1:
        return _sub(line, bpp)
    if kind == 2:
        return _up(line, prev)
    out = bytearray(line)
    for i in range(len(out)):
        left = out[i - bpp] if i >= bpp else 0
        if kind == 3:
            out[i] = (out[i] + ((left + prev[i]) >> 1)) & 0xFF
        else:
            out[i] = (out[i] + _paeth_byte(left, prev[i], prev[i - bpp] if i >= bpp else 0)) & 0xFF
    return out


def png_pixels(data):
    """(width, height, rows) of an 8-bit RGB or RGBA PNG, non-interlaced; each row a list of (r, g, b)."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    pos, idat, header = 8, [], None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
    if header is None:
        raise ValueError("PNG without IHDR")
    width, height, depth, colour, _, _, interlace = header
    if depth != 8 or colour not in (2, 6) or interlace:
        raise ValueError("PNG of depth %d, colour type %d, interlace %d not decoded here" % (depth, colour, interlace))
    bpp = 3 if colour == 2 else 4
    raw = zlib.decompress(b"".join(idat))
    stride = width * bpp
    prev = bytearray(stride)
    rows = []
    for y in range(height):
        start = y * (stride + 1)
        line = _unfilter(raw[start], bytearray(raw[start + 1:start + 1 + stride]), prev, bpp)
        rows.append(list(zip(line[0::bpp], line[1::bpp], line[2::bpp])))
        prev = line
    return width, height, rows
