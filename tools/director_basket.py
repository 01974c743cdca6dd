"""contrib/icingaweb2/director-basket.json, written from contrib/icinga2/'s CheckCommand and service.

    python3 tools/director_basket.py > contrib/icingaweb2/director-basket.json   # write it
    python3 tools/director_basket.py --check                                    # exit 1 when it is stale

The basket is what the Icinga Director restores (`icingacli director basket
restore < FILE`, or the web form's upload): the CheckCommand `mail_roundtrip`
with every argument of contrib/icinga2/mail_roundtrip.conf (value or set_if,
and the description, as written there), a Datafield for the variable of each
argument (a checkbox for flags, a list to choose from for options with fixed
choices, text otherwise; the sender is required), and the service template
`mail-roundtrip` with the interval, attempts, timeout and variables of the
example service in contrib/icinga2/services.conf.  The Director has no `env`
for commands, so passwords reach the check through their files
(`mail_roundtrip_imap_password_file`, ...) or `--extra-opts`; the host's
`$address$` is the default server (the Director knows no `ipv4-or-ipv6`).
The choices come from the check's parser (tools/options_doc.py's way of
loading it).
"""

import argparse
import json
import os
import re
import sys
from typing import Any, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tools import options_doc  # noqa: E402

ROOT = options_doc.ROOT
CONF = os.path.join(ROOT, "contrib", "icinga2", "mail_roundtrip.conf")
SERVICES = os.path.join(ROOT, "contrib", "icinga2", "services.conf")
BASKET = os.path.join(ROOT, "contrib", "icingaweb2", "director-basket.json")
COMMAND = "mail_roundtrip"
TEMPLATE = "mail-roundtrip"
PREFIX = "mail_roundtrip_"
DEFAULT_HOST = "$address$"
REQUIRED = ("mail_roundtrip_from",)
DATATYPE = "Icinga\\Module\\Director\\DataType\\DataType"
# How a word of a variable's name is written in a caption.
WORDS = {"smtp": "SMTP", "imap": "IMAP", "pop3": "POP3", "tls": "TLS", "ca": "CA", "id": "ID",
         "url": "URL", "helo": "HELO", "oauth2": "OAuth2", "ipv4": "IPv4 only", "ipv6": "IPv6 only"}
# Captions that say more than the variable's name.
CAPTIONS = {"host": "Mail server", "from": "Sender (probe address)", "to": "Recipient",
            "warning": "Warning (seconds)", "critical": "Critical (seconds)", "timeout": "Timeout (seconds)",
            "name": "Profile name", "node": "Node name"}
ARGUMENT = re.compile(r'^\s*"(?P<key>-[^"]+)" = \{\s*(?P<kind>value|set_if) = "(?P<var>[^"]+)"\s*'
                      r'description = "(?P<description>(?:[^"\\]|\\.)*)"\s*\}', re.M)
COMMAND_LINE = re.compile(r'^\s*command = \[ PluginDir \+ "(?P<path>[^"]+)" \]', re.M)
APPLY = re.compile(r'^apply Service "(?P<name>[^"]+)" \{(?P<body>.*?)^\}', re.M | re.S)
SETTING = re.compile(r"^\s*(?P<key>[\w.]+) = (?P<value>\S+)", re.M)
DURATION = {"s": 1, "m": 60, "h": 3600}


def read(path: str) -> str:
    with open(path, encoding="utf-8") as fh:
        return fh.read()


def unquote(literal: str) -> str:
    """The text of an Icinga 2 string literal's inside (backslash escapes undone)."""
    return json.loads('"%s"' % literal)


def arguments(conf: str) -> dict[str, dict[str, str]]:
    """{option: {"value" or "set_if": "$var$", "description": ...}} in the order of the CheckCommand."""
    found = {m.group("key"): {m.group("kind"): m.group("var"), "description": unquote(m.group("description"))}
             for m in ARGUMENT.finditer(conf)}
    declared = re.findall(r'^\s*"(-[^"]+)" = \{', conf, re.M)
    if list(found) != declared:
        raise ValueError("arguments not read as value/set_if and description: %s"
                         % sorted(set(declared) - set(found)))
    return found


def variable(argument: dict[str, str]) -> str:
    return (argument.get("value") or argument["set_if"]).strip("$")


def caption(var: str) -> str:
    """What the Director's form calls the variable, e.g. "SMTP password file"."""
    name = var[len(PREFIX):]
    if name in CAPTIONS:
        return CAPTIONS[name]
    words = [WORDS.get(w, w) for w in name.split("_")]
    text = " ".join(words)
    return text[0].upper() + text[1:]


def choices(parser: argparse.ArgumentParser) -> dict[str, list[str]]:
    """{option string: its fixed choices} of the check's options that have them."""
    return {o: list(a.choices) for a in parser._actions if a.choices for o in a.option_strings}


def datafield(number: int, var: str, description: str, kind: str, values: Optional[list[str]]) -> dict[str, Any]:
    """The Datafield of *var*: Boolean for a flag, a Datalist for fixed choices, else a String."""
    if kind == "set_if":
        datatype, settings = "Boolean", {}
    elif values:
        datatype, settings = "Datalist", {"behavior": "strict", "data_type": "string", "datalist": var}
    else:
        datatype, settings = "String", {"visibility": "visible"}
    return {"varname": var, "caption": caption(var), "description": description, "datatype": DATATYPE + datatype,
            "format": None, "originalId": str(number), "settings": settings, "category": None}


def datalist(var: str, values: list[str]) -> dict[str, Any]:
    return {"list_name": var, "owner": "check_mail_roundtrip",
            "entries": [{"entry_name": v, "entry_value": v, "format": "string", "allowed_roles": None}
                        for v in values]}


def seconds(duration: str) -> str:
    """An Icinga 2 duration ("5m", "60s") in seconds, as the Director stores it."""
    m = re.fullmatch(r"(\d+)([smh])", duration)
    if not m:
        raise ValueError("not a duration in s, m or h: %r" % duration)
    return str(int(m.group(1)) * DURATION[m.group(2)])


def service_template(services: str) -> dict[str, Any]:
    """The service template: the example service's interval, attempts, timeout and own variables."""
    m = APPLY.search(services)
    if not m or m.group("name") != TEMPLATE:
        raise ValueError("no apply Service %r in %s" % (TEMPLATE, SERVICES))
    body = re.sub(r"#.*", "", m.group("body"))
    settings = {s.group("key"): s.group("value") for s in SETTING.finditer(body)}
    variables = {}
    for key, value in settings.items():
        if key.startswith("vars.") and not value.startswith("host."):
            variables[key[len("vars."):]] = json.loads(value)
    return {"object_name": TEMPLATE, "object_type": "template", "check_command": COMMAND,
            "check_interval": seconds(settings["check_interval"]),
            "retry_interval": seconds(settings["retry_interval"]),
            "max_check_attempts": settings["max_check_attempts"],
            "check_timeout": seconds(settings["check_timeout"]),
            "fields": [], "vars": variables}


def basket(parser: Optional[argparse.ArgumentParser] = None) -> dict[str, Any]:
    """The whole basket as the Director's JSON has it (types, then names or ids)."""
    parser = parser or options_doc.check_parser(__file__)
    conf = read(CONF)
    path = COMMAND_LINE.search(conf)
    if not path:
        raise ValueError("no command = [ PluginDir + ... ] in %s" % CONF)
    fixed = choices(parser)
    args = arguments(conf)
    fields, datafields, lists = [], {}, {}
    for number, (option, argument) in enumerate(args.items(), 1):
        var = variable(argument)
        kind = "set_if" if "set_if" in argument else "value"
        values = fixed.get(option)
        datafields[str(number)] = datafield(number, var, argument["description"], kind, values)
        if values and kind == "value":
            lists[var] = datalist(var, values)
        fields.append({"datafield_id": number, "is_required": "y" if var in REQUIRED else "n", "var_filter": None})
    command = {"object_name": COMMAND, "object_type": "object", "methods_execute": "PluginCheck",
               "command": "PluginDir + " + path.group("path"), "arguments": args, "fields": fields,
               "vars": {PREFIX + "host": DEFAULT_HOST}}
    return {"DataList": lists, "Datafield": datafields, "Command": {COMMAND: command},
            "ServiceTemplate": {TEMPLATE: service_template(read(SERVICES))}}


def text(parser: Optional[argparse.ArgumentParser] = None) -> str:
    """The file's text, as tools/director_basket.py writes it."""
    return json.dumps(basket(parser), indent=2, ensure_ascii=False) + "\n"


def main(argv: Optional[list[str]] = None) -> int:
    return options_doc.generate(argv, BASKET, text, __file__, __doc__ or "")


if __name__ == "__main__":
    sys.exit(main())
