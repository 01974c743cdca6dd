"""contrib/icingaweb2/ agrees with the check and with contrib/icinga2/, without any server.

The Director basket is what tools/director_basket.py writes from
contrib/icinga2/mail_roundtrip.conf and services.conf, so it cannot drift
from them; its command holds every argument of the CheckCommand as written
there.  The graphite module's template is in the module's format
(`<template>.<topic>` sections, one name template per metric filter,
functions for named curves only), for the CheckCommand mail_roundtrip, and
draws the perfdata labels docs/reference/perfdata.md lists, seconds as
seconds.  docs/howto/icingaweb2.md links both files.  That the Director
restores and deploys the basket and that the graphs render is
tests/test_icingaweb.py's, against real servers.
"""

import configparser
import json
import os
import re
import subprocess
import sys

from tests.checkrun import ROOT
from tools import director_basket, options_doc

TEMPLATE_FILE = os.path.join(ROOT, "contrib", "icingaweb2", "mail_roundtrip.ini")
HOWTO = os.path.join(ROOT, "docs", "howto", "icingaweb2.md")
PERFDATA_PAGE = os.path.join(ROOT, "docs", "reference", "perfdata.md")
TOPICS = {"graph", "metrics_filters", "urlparams", "functions"}
NOT_DRAWN = {"unexpunged"}  # only on a server without UIDPLUS: the module's default graph shows it


def read(path):
    with open(path, encoding="utf-8") as fh:
        return fh.read()


def basket():
    return json.loads(read(director_basket.BASKET))


def templates():
    """{template: {topic: {key: value}}} of contrib/icingaweb2/mail_roundtrip.ini."""
    parser = configparser.ConfigParser(interpolation=None, comment_prefixes=(";",))
    parser.optionxform = str
    parser.read(TEMPLATE_FILE, encoding="utf-8")
    found = {}
    for section in parser.sections():
        name, _, topic = section.rpartition(".")
        found.setdefault(name, {})[topic] = {k: v.strip('"') for k, v in parser[section].items()}
    return found


def perfdata_labels():
    """{label: unit} of the table in docs/reference/perfdata.md."""
    labels = {}
    for names, unit in re.findall(r"^\| (`[^|]+`) \|\s*(s?)\s*\|", read(PERFDATA_PAGE), re.M):
        for name in re.findall(r"`(\w+)`", names):
            labels[name] = unit
    return labels


def test_the_basket_is_what_the_tool_writes():
    assert read(director_basket.BASKET) == director_basket.text(), (
        "contrib/icingaweb2/director-basket.json is stale: "
        "run  python3 tools/director_basket.py > contrib/icingaweb2/director-basket.json")


def test_the_tool_says_when_the_basket_is_stale(tmp_path):
    ok = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "director_basket.py"), "--check"],
                        capture_output=True, text=True, timeout=60)
    assert (ok.returncode, ok.stderr) == (0, "")
    stale = tmp_path / "director-basket.json"
    stale.write_text(director_basket.text().replace("Probe sender", "Sender"))
    assert options_doc.check_file(str(stale), director_basket.text(), director_basket.__file__) == 1


def test_the_command_has_every_argument_of_the_checkcommand_as_written_there():
    conf = read(director_basket.CONF)
    written = {}
    for key, body in re.findall(r'^\s*"(-[^"]+)" = \{(.*?)\n\s*\}', conf, re.M | re.S):
        written[key] = dict(re.findall(r'^\s*(value|set_if|description) = "((?:[^"\\]|\\.)*)"', body, re.M))
        written[key]["description"] = written[key]["description"].replace("\\\\", "\\")
    [command] = basket()["Command"].values()
    assert command["object_name"] == "mail_roundtrip" and command["methods_execute"] == "PluginCheck"
    assert command["arguments"] == written
    assert command["vars"] == {"mail_roundtrip_host": "$address$"}


def test_every_variable_of_the_command_has_its_datafield():
    b = basket()
    [command] = b["Command"].values()
    variables = {(a.get("value") or a["set_if"]).strip("$") for a in command["arguments"].values()}
    fields = {str(f["datafield_id"]): f["is_required"] for f in command["fields"]}
    named = {b["Datafield"][i]["varname"]: required for i, required in fields.items()}
    assert set(named) == variables
    assert [v for v, required in named.items() if required == "y"] == ["mail_roundtrip_from"]
    lists = {f["settings"].get("datalist") for f in b["Datafield"].values()} - {None}
    assert lists == set(b["DataList"])
    assert [e["entry_name"] for e in b["DataList"]["mail_roundtrip_smtp_tls"]["entries"]] == ["starttls", "tls", "none"]


def test_the_service_template_is_the_example_service():
    [template] = basket()["ServiceTemplate"].values()
    assert template == {
        "object_name": "mail-roundtrip", "object_type": "template", "check_command": "mail_roundtrip",
        "check_interval": "300", "retry_interval": "300", "max_check_attempts": "1", "check_timeout": "60",
        "fields": [], "vars": {"mail_roundtrip_imap_password_file": "/etc/check_mail_roundtrip/imap.password",
                               "mail_roundtrip_state_dir": "/var/lib/check_mail_roundtrip",
                               "mail_roundtrip_warning": 120, "mail_roundtrip_critical": 600}}
    services = read(director_basket.SERVICES)
    for line in ("check_interval = 5m", "retry_interval = 5m", "max_check_attempts = 1", "check_timeout = 60s",
                 "vars.mail_roundtrip_warning = 120", "vars.mail_roundtrip_critical = 600"):
        assert line in services


def test_the_graph_templates_are_in_the_modules_format_for_the_checkcommand():
    found = templates()
    assert len(found) >= 4
    for name, topics in found.items():
        assert set(topics) == TOPICS, name
        assert topics["graph"] == {"check_command": "mail_roundtrip"}, name
        for metric in topics["metrics_filters"].values():
            assert metric.count("$service_name_template$") == 1 and "$host_name_template$" not in metric
        assert set(topics["functions"]) == set(topics["metrics_filters"]), name
        assert all("$metric$" in f for f in topics["functions"].values()), name
        assert topics["urlparams"]["title"] and topics["urlparams"]["min"] == "0", name
    assert 'object CheckCommand "mail_roundtrip"' in read(director_basket.CONF)


def test_every_perfdata_label_is_drawn_with_its_unit_and_its_thresholds():
    labels = perfdata_labels()
    assert {"rtt", "oldest_pending", "pending", "lost", "junk", "since_last_success", "leg_out"} <= set(labels)
    drawn = {}
    for name, topics in templates().items():
        seconds = topics["urlparams"]["yUnitSystem"] == "sec"
        for curve, metric in topics["metrics_filters"].items():
            label, kind = re.fullmatch(r"\$service_name_template\$\.perfdata\.(\w+)\.(value|warn|crit)", metric).groups()
            assert labels[label] == ("s" if seconds else ""), (name, label)
            assert topics["functions"][curve].endswith(" (s)')") == seconds, (name, curve)
            drawn.setdefault(label, set()).add(kind)
    assert set(drawn) == set(labels) - NOT_DRAWN
    for label in ("rtt", "oldest_pending", "since_last_success", "leg_out"):
        assert drawn[label] == {"value", "warn", "crit"}, label


def test_the_howto_links_both_files():
    text = read(HOWTO)
    for path in ("contrib/icingaweb2/mail_roundtrip.ini", "contrib/icingaweb2/director-basket.json"):
        assert "(../../%s)" % path in text, path
