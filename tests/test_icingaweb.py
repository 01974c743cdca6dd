"""Where Icinga admins look: the Director's basket deploys the check, Icinga Web 2 graphs it.

One stack for the module, all private and on 127.0.0.1: MariaDB
(tests/lab/mariadb.py) with the IDO's, Icinga Web's and the Director's
databases; carbon (tests/lab/carbon.py) and graphite-web
(tests/lab/graphiteweb.py) on its whisper files; an Icinga 2 with its API,
the IDO and a GraphiteWriter (tests/lab/icinga_cluster.py's endpoint, alone
in its zone); Icinga Web 2 with the monitoring, graphite and director
modules (tests/lab/icingaweb.py), contrib/icingaweb2/mail_roundtrip.ini as
the graphite module's template, the Director migrated and kickstarted.

Then what an admin does without editing a configuration file: restore
contrib/icingaweb2/director-basket.json (`icingacli director basket
restore`), create a host and a service from the basket's template with the
mail lab's mailbox, deploy to Icinga 2, and look at the service's page.
The plugin is the one installed as README says (`installed_plugin`); the
IMAP password reaches it through a file, as the basket's command passes it.
With ICINGAWEB_SCREENSHOT set to a path, the page's screenshot is copied
there (docs/img/icingaweb2-graphs.png is made so).
"""

import html
import json
import os
import re
import secrets
import shutil
import time
from collections import Counter
from types import SimpleNamespace
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.lab import browser, daemon
from tests.lab.carbon import Carbon
from tests.lab.graphiteweb import GraphiteWeb
from tests.lab.icinga import ensure_readable, private_dir
from tests.lab.icinga_cluster import IcingaCluster
from tests.lab.icingaweb import GRAPH_MINUTES, IcingaWeb, api_get, api_user_object, ido_object, prepare_ido
from tests.lab.mariadb import MariaDB
from tests.test_icinga import write_private
from tools import director_basket

pytestmark = pytest.mark.lab

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEMPLATE_FILE = os.path.join(ROOT, "contrib", "icingaweb2", "mail_roundtrip.ini")
BASKET_FILE = director_basket.BASKET
NODE = "icinga.lab.test"
HOST, SERVICE, MAILBOX = "mail-lab", "mail-roundtrip", "icingaweb@lab.test"
WARNING, CRITICAL = 3, 30
# Icinga checks every 5 s and carbon keeps a point per 5 s: one check a point, none overwritten by the next.
INTERVAL, RETENTIONS = "5", "5s:1h"
POINTS = 3  # round trips in carbon before the page is looked at
# The perfdata each graph template draws (contrib/icingaweb2/mail_roundtrip.ini), as the lab's runs print it.
DRAWN = {
    "mail-roundtrip-rtt": ("rtt.value", "rtt.warn", "rtt.crit"),
    "mail-roundtrip-oldest": ("oldest_pending.value", "oldest_pending.warn", "oldest_pending.crit"),
    "mail-roundtrip-probes": ("pending.value", "lost.value", "junk.value"),
    "mail-roundtrip-since-success": ("since_last_success.value",),
}
# The curves' colours in the template.
RTT_BLUE, OLDEST_PURPLE = (0x1A, 0x7D, 0xD7), (0x8E, 0x44, 0xAD)
WARN_ORANGE, CRIT_RED = (0xFF, 0x8D, 0x00), (0xFF, 0x00, 0x00)
WINDOW = (1280, 1300)


def metric_prefix():
    """Where Icinga 2's GraphiteWriter puts the service's perfdata."""
    return "icinga2.%s.services.%s.mail_roundtrip.perfdata." % (HOST, SERVICE)


@pytest.fixture(scope="module")
def stack(lab_session, installed_plugin):
    """Every server of the stack, started once for the module (see the module's docstring)."""
    with MariaDB() as db, Carbon(retentions=RETENTIONS) as carbon, GraphiteWeb(carbon.whisper_dir) as graphite:
        ido = prepare_ido(db)
        api = SimpleNamespace(host="127.0.0.1", user="icingaweb", password=secrets.token_hex(16), endpoint=NODE)
        objects = ido_object(ido) + api_user_object(api) + 'object Zone "director-global" {\n    global = true\n}\n'
        cluster = IcingaCluster(objects, os.path.dirname(installed_plugin), names=(NODE,))
        node = cluster.nodes[0]
        node.graphite = (carbon.host, carbon.port)
        api.port, api.ca_file = node.port, os.path.join(cluster.dir, "data", "ca", "ca.crt")
        with cluster, IcingaWeb(db, ido, api, graphite.url, templates=[TEMPLATE_FILE]) as web:
            yield SimpleNamespace(db=db, carbon=carbon, graphite=graphite, icinga=node, api=api, web=web,
                                  lab=lab_session, plugin=installed_plugin)


@pytest.fixture(scope="module")
def restored(stack):
    """The basket restored into the Director: icingacli's answer."""
    with open(BASKET_FILE, encoding="utf-8") as fh:
        return stack.web.cli("director", "basket", "restore", input=fh.read())


@pytest.fixture(scope="module")
def deployed(stack, restored):
    """A host and a service from the basket's template, deployed: what `config deploy` said, the
    service's first check result, its password and password file."""
    web, lab = stack.web, stack.lab
    ensure_readable(lab.ca_file)
    home = private_dir("cmr-icingaweb-checks-")
    try:
        password = secrets.token_urlsafe(12)
        lab.add_user(MAILBOX, password)
        password_file = os.path.join(home, "imap.password")
        write_private(password_file, password + "\n")
        web.cli("director", "host", "create", HOST, "--json",
                json.dumps({"address": lab.host, "check_command": "dummy"}))
        web.cli("director", "service", "create", SERVICE, "--json", json.dumps({
            "host": HOST, "imports": [director_basket.TEMPLATE], "check_interval": INTERVAL, "retry_interval": INTERVAL,
            "vars": {"mail_roundtrip_from": MAILBOX, "mail_roundtrip_smtp_port": str(lab.ports["smtp"]),
                     "mail_roundtrip_imap_port": str(lab.ports["imaps"]), "mail_roundtrip_ca_file": lab.ca_file,
                     "mail_roundtrip_imap_password_file": password_file,
                     "mail_roundtrip_state_dir": os.path.join(home, "state"),
                     "mail_roundtrip_warning": str(WARNING), "mail_roundtrip_critical": str(CRITICAL)}}))
        deploy = web.cli("director", "config", "deploy")
        first = daemon.wait_until(lambda: last_check_result(stack), 60, interval=0.5)
        assert first, "Icinga 2 did not run the deployed service within 60s\n%s" % stack.icinga.logs()
        yield SimpleNamespace(deploy=deploy, result=first, password=password, password_file=password_file)
    finally:
        lab.release()
        shutil.rmtree(home, ignore_errors=True)


def last_check_result(stack):
    """The service's last check result from the Icinga 2 API; None before its first run."""
    found = api_get(stack.api, "/v1/objects/services?service=%s!%s&attrs=last_check_result" % (HOST, SERVICE))
    results = (found or {}).get("results") or [{}]
    return results[0].get("attrs", {}).get("last_check_result")


def conf_arguments():
    """The CheckCommand's arguments as contrib/icinga2/mail_roundtrip.conf has them."""
    return director_basket.arguments(director_basket.read(director_basket.CONF))


def pairs(argv):
    return [list(p) for p in zip(argv, argv[1:])]


def test_restoring_the_basket_gives_the_checkcommand_with_every_argument(stack, restored):
    assert restored == "Objects from Basket Snapshot have been restored\n"
    shown = json.loads(stack.web.cli("director", "command", "show", "mail_roundtrip", "--json", "--no-defaults"))
    assert shown["object_name"] == "mail_roundtrip" and shown["methods_execute"] == "PluginCheck"
    assert shown["command"] == "PluginDir + /check_mail_roundtrip"
    assert shown["arguments"] == conf_arguments()
    assert shown["vars"] == {"mail_roundtrip_host": "$address$"}


def test_every_argument_has_its_datafield_on_the_command(stack, restored):
    rows = stack.db.query(stack.web.director_db, """
        SELECT f.varname, f.datatype, cf.is_required FROM icinga_command_field cf
        JOIN director_datafield f ON f.id = cf.datafield_id
        JOIN icinga_command c ON c.id = cf.command_id WHERE c.object_name = 'mail_roundtrip'""")
    fields = {name: (datatype.rsplit("\\", 1)[1], required) for name, datatype, required in rows}
    flags = {director_basket.variable(a) for a in conf_arguments().values() if "set_if" in a}
    assert sorted(fields) == sorted(director_basket.variable(a) for a in conf_arguments().values())
    assert {v for v, (datatype, _) in fields.items() if datatype == "DataTypeBoolean"} == flags
    assert fields["mail_roundtrip_smtp_tls"][0] == "DataTypeDatalist"
    assert [v for v, (_, required) in fields.items() if required == "y"] == ["mail_roundtrip_from"]


def test_restoring_the_basket_again_changes_nothing(stack, restored):
    def count():
        return stack.db.query(stack.web.director_db, "SELECT (SELECT COUNT(*) FROM director_datafield), "
                              "(SELECT COUNT(*) FROM icinga_command_argument), "
                              "(SELECT COUNT(*) FROM director_datalist_entry)")

    before = count()
    with open(BASKET_FILE, encoding="utf-8") as fh:
        stack.web.cli("director", "basket", "restore", input=fh.read())
    assert count() == before


def test_the_deployed_service_runs_the_check_with_the_password_in_a_file(stack, deployed):
    assert re.fullmatch(r"Config '[0-9a-f]{40}' has been deployed\n", deployed.deploy)
    result = deployed.result
    assert re.fullmatch(r"MAIL_ROUNDTRIP (OK|WARNING) - .+", result["output"].splitlines()[0]), result
    assert result["command"][0] == stack.plugin
    argv = pairs(result["command"][1:])
    for pair in (["--from", MAILBOX], ["--imap-password-file", deployed.password_file], ["-H", stack.lab.host],
                 ["-w", str(WARNING)], ["-c", str(CRITICAL)], ["--state-dir", os.path.dirname(deployed.password_file)
                                                               + "/state"]):
        assert pair in argv, (pair, result["command"])
    assert deployed.password not in json.dumps(result)


def test_the_service_turns_ok_with_the_round_trip_in_its_perfdata(stack, deployed):
    def ok():
        last = last_check_result(stack)
        return last if last and any(p.startswith("rtt=") for p in last["performance_data"]) else None

    last = daemon.wait_until(ok, 60, interval=1.0)
    assert last, "no round trip within 60s: %s" % last_check_result(stack)
    assert re.fullmatch(r"MAIL_ROUNDTRIP OK - round trip \d+\.\d+s, \d in flight, last success \d+s ago ?",
                        last["output"]), last["output"]
    rtt = [p for p in last["performance_data"] if p.startswith("rtt=")]
    assert re.fullmatch(r"rtt=\d+\.\d+s;%d;%d;0" % (WARNING, CRITICAL), rtt[0]), rtt


def stall_for_the_picture(lab):
    """For the documentation's screenshot only: minutes of checks with a stall of the mail in the
    middle (WARNING while a probe is older than -w, then its slow round trip), to fill the graphs."""
    time.sleep(120)
    lab.hold()
    try:
        time.sleep(20)
    finally:
        lab.release()
    time.sleep(100)


def test_the_service_page_shows_the_graphs_with_data(stack, deployed, tmp_path):
    prefix = metric_prefix()
    stack.carbon.wait_for([prefix + m for metrics in DRAWN.values() for m in metrics], timeout=60)
    daemon.wait_until(lambda: len(stack.carbon.series(prefix + "rtt.value")) >= POINTS, 60, interval=1.0)
    if os.environ.get("ICINGAWEB_SCREENSHOT"):
        stall_for_the_picture(stack.lab)
    page = stack.web.url("/monitoring/service/show", host=HOST, service=SERVICE, graphs_limit=-1)
    dom = browser.dump_dom_url(page, window=WINDOW)
    images = [html.unescape(src) for src in re.findall(r'<img[^>]+src="([^"]*/graphite/graph/service\?[^"]*)"', dom)]
    queries = [parse_qs(urlsplit(src).query) for src in images]
    assert sorted(q["template"][0] for q in queries) == sorted(DRAWN), images
    assert all(q["host.name"] == [HOST] and q["service.name"] == [SERVICE] for q in queries), images

    renders = [path for path, status in stack.graphite.requests() if path.startswith("/render?") and status == 200]
    for template, metrics in DRAWN.items():
        targets = [parse_qs(urlsplit(r).query)["target"] for r in renders]
        drawn = [t for t in targets if any(prefix + metrics[0] in target for target in t)]
        assert drawn, "graphite-web drew no %s (renders: %s)" % (template, renders)
        assert all(any(prefix + m in target for target in drawn[-1]) for m in metrics), drawn[-1]
        answer = stack.graphite.render_json(drawn[-1], "-%dmin" % GRAPH_MINUTES)
        empty = [series["target"] for series in answer if not any(v is not None for v, _ in series["datapoints"])]
        assert len(answer) == len(metrics) and not empty, (template, answer)

    shot = str(tmp_path / "icingaweb2-graphs.png")
    browser.screenshot_url(page, shot, window=WINDOW)
    with open(shot, "rb") as fh:
        width, height, rows = browser.png_pixels(fh.read())
    seen = Counter(pixel for row in rows for pixel in row)
    assert (width, height) == WINDOW and len(seen) > 500, "the page is nearly blank: %d colours" % len(seen)
    assert seen[RTT_BLUE] and seen[OLDEST_PURPLE] and seen[WARN_ORANGE] and seen[CRIT_RED], "curves missing"
    if os.environ.get("ICINGAWEB_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["ICINGAWEB_SCREENSHOT"])
