"""``--extra-opts [SECTION][@FILE]``: options from an ini file, as the monitoring-plugins do it.

- The section defaults to the plugin's name (``check_mail_roundtrip``).
- The file defaults to ``$MP_CONFIG_FILE``, else the first of
  ``monitoring-plugins.ini``, ``plugins.ini``, ``nagios-plugins.ini`` found
  in a directory of ``$NAGIOS_CONFIG_PATH`` (colon-separated), else the first
  existing file of :data:`DEFAULT_PATHS`.
- In the section, each line ``key = value`` stands for ``--key=value`` (a
  one-letter key for ``-k value``); ``key =`` alone for a flag (``keep =``).
  ``#`` and ``;`` start comment lines.  A line without ``=`` is an error, and
  so is a section that is not in the file.
- The options from the file come first, so options on the command line win.
- Passwords may stand in the file as :data:`SECRET_KEYS` (they never become
  command-line arguments), but only if the file is readable by its owner
  alone; otherwise the run is refused, naming the file and its mode.

Pure apart from reading the file (a regular file of at most 64 KiB, read as
:mod:`private_file` reads, so a FIFO or a device never hangs or floods the run);
the CLI turns :class:`ExtraOptsError` into a usage error (UNKNOWN).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Container, Iterable, Mapping, Sequence
from typing import Optional, cast

from . import private_file

# (key, value) of one line of a section; value None for a bare "key ="
Pair = tuple[str, Optional[str]]

OPTION = "--extra-opts"
DEFAULT_SECTION = "check_mail_roundtrip"
INI_NAMES = ("monitoring-plugins.ini", "plugins.ini", "nagios-plugins.ini")
DEFAULT_PATHS = (
    "/usr/local/etc/monitoring-plugins/monitoring-plugins.ini",
    "/usr/local/etc/monitoring-plugins.ini",
    "/etc/monitoring-plugins/monitoring-plugins.ini",
    "/etc/monitoring-plugins.ini",
    "/etc/nagios/plugins.ini",
    "/usr/local/nagios/etc/plugins.ini",
    "/usr/local/etc/nagios/plugins.ini",
    "/etc/opt/nagios/plugins.ini",
    "/etc/nagios-plugins.ini",
    "/usr/local/etc/nagios-plugins.ini",
    "/etc/opt/nagios-plugins.ini",
)
# Keys that hold secrets: kept out of argv, allowed only in a private file.
SECRET_KEYS = ("smtp-password", "imap-password", "pop3-password", "oauth2-client-secret")
MAX_BYTES = 64 * 1024  # one file may serve all monitoring plugins; larger is refused
_TRUE = ("", "1", "yes", "true", "on")
_FALSE = ("0", "no", "false", "off")


class ExtraOptsError(Exception):
    """The ini file or section cannot be used; the message says why."""


def split_locator(locator: Optional[str]) -> tuple[str, Optional[str]]:
    """'[SECTION][@FILE]' -> (section, file or None)."""
    section, at, path = (locator or "").partition("@")
    return section.strip() or DEFAULT_SECTION, (path if at and path else None)


def default_file(environ: Mapping[str, str]) -> Optional[str]:
    """The ini file used when the locator names none, or None."""
    if environ.get("MP_CONFIG_FILE"):
        return environ["MP_CONFIG_FILE"]
    for directory in (environ.get("NAGIOS_CONFIG_PATH") or "").split(":"):
        if not directory:
            continue
        for name in INI_NAMES:
            path = os.path.join(directory, name)
            if os.path.exists(path):
                return path
    for path in DEFAULT_PATHS:
        if os.path.exists(path):
            return path
    return None


def parse_section(text: str, section: str, path: str = "ini file") -> list[Pair]:
    """The ``(key, value)`` pairs of *section* in ini *text*, in file order.

    *value* is None for a bare ``key =``.  Raises ExtraOptsError.
    """
    pairs: list[Pair] = []
    found = False
    current: Optional[str] = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            if not line.endswith("]"):
                raise ExtraOptsError("%s line %d: a section header must end with ']'" % (path, number))
            current = line[1:-1].strip()
            found = found or current == section
            continue
        if current is None:
            raise ExtraOptsError("%s line %d: an option before the first [section]" % (path, number))
        if current != section:
            continue
        key, eq, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not eq or not key or any(c.isspace() for c in key):
            raise ExtraOptsError("%s line %d: expected 'option = value', found %r" % (path, number, raw.strip()))
        pairs.append((key.lstrip("-"), value if value else None))
    if not found:
        raise ExtraOptsError("no section [%s] in %s" % (section, path))
    return pairs


def _read(path: str) -> tuple[str, os.stat_result]:
    try:
        data, st = private_file.load(path, "ini file", MAX_BYTES, private=False)
    except private_file.Refused as exc:
        raise ExtraOptsError(str(exc))
    except OSError as exc:
        raise ExtraOptsError("cannot read %s: %s" % (path, exc.strerror or exc))
    try:
        return data.decode("utf-8"), st
    except UnicodeDecodeError:
        raise ExtraOptsError("%s is not UTF-8 text" % path)


def to_args(pairs: Iterable[Pair], flags: Container[str]) -> list[str]:
    """Command-line arguments for *pairs*; *flags* names the options without a value."""
    args: list[str] = []
    for key, value in pairs:
        option = ("-" if len(key) == 1 else "--") + key
        if key in flags:
            word = (value or "").lower()
            if word in _TRUE:
                args.append(option)
            elif word not in _FALSE:
                raise ExtraOptsError("option %s takes no value (or yes/no), found %r" % (key, value))
        elif value is None:
            raise ExtraOptsError("option %s needs a value" % key)
        else:
            args.append(option + ("" if len(key) == 1 else "=") + value)
    return args


def load(locator: str, flags: Container[str], environ: Mapping[str, str]) -> tuple[list[str], dict[str, str]]:
    """(argv, secrets) from one ``--extra-opts`` locator.

    *secrets* maps the SECRET_KEYS found to their values.
    """
    section, path = split_locator(locator)
    path = path or default_file(environ)
    if path is None:
        raise ExtraOptsError("no ini file given and none found in the standard places "
                             "(e.g. /etc/monitoring-plugins/monitoring-plugins.ini)")
    text, st = _read(path)
    pairs = parse_section(text, section, path)
    secrets = {k: v for k, v in pairs if k in SECRET_KEYS}
    if secrets:
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            raise ExtraOptsError(
                "%s holds %s but is readable by others (mode %04o): chmod 600 %s"
                % (path, "/".join(sorted(secrets)), mode, path))
        if any(v is None for v in secrets.values()):
            raise ExtraOptsError("%s: an empty password" % path)
    return to_args([(k, v) for k, v in pairs if k not in SECRET_KEYS], flags), cast("dict[str, str]", secrets)


def expand(argv: Sequence[str], flags: Container[str],
           environ: Mapping[str, str]) -> tuple[list[str], dict[str, str]]:
    """Replace every ``--extra-opts[=LOCATOR]`` in *argv* by the file's options.

    Returns (argv, secrets): the options from the files first (so the command
    line wins), then the rest of *argv*.  A bare ``--extra-opts`` takes the
    next argument as its locator unless it starts with ``-``.
    """
    from_files: list[str] = []
    rest: list[str] = []
    secrets: dict[str, str] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == OPTION or arg.startswith(OPTION + "="):
            if arg == OPTION:
                locator = ""
                if i + 1 < len(argv) and not argv[i + 1].startswith("-"):
                    locator = argv[i + 1]
                    i += 1
            else:
                locator = arg[len(OPTION) + 1:]
            args, found = load(locator, flags, environ)
            from_files.extend(args)
            secrets.update(found)
        elif arg == "--":
            rest.extend(argv[i:])
            break
        else:
            rest.append(arg)
        i += 1
    return from_files + rest, secrets
