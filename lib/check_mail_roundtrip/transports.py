"""The transports of a run, chosen in one place from its settings.

A run collects with a collector (IMAP, POP3 or Microsoft Graph, by
``--collect``) and sends with a sender (SMTP or Graph, by ``--send``);
:func:`for_settings` picks them, and a run is handed them (tests hand in a
mail system in memory).  The protocol modules are imported only here, and
only when a run is about to use them.  A run that uses Graph for both legs
has one Graph client for both: one connection, one token.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from .mail import CollectorFactory, Sender
from .record import record

if TYPE_CHECKING:
    from .settings import Settings


def _nothing() -> None:
    """Nothing to close."""


@record(frozen=True)
class Transports:
    """How a run opens its collector and sends its probe, and what it closes at its end."""

    open_collector: CollectorFactory
    send: Sender
    close: Callable[[], None] = _nothing


def for_settings(settings: Settings) -> Transports:
    """The collector *settings* collect by (the protocol of ``settings.collect``) and the
    sender they send by (SMTP, or Graph)."""
    graph: Any = None  # graph_http.Graph, loaded only by a run that uses it
    if "graph" in (settings.collect_by, settings.send_by):
        from .graph_http import Graph
        assert settings.graph is not None  # a Graph leg has its Endpoint (see cli.py)
        graph = Graph(settings.graph)
    collect: CollectorFactory
    send: Sender
    if settings.collect_by == "graph":
        from .graph import collector_factory
        collect = collector_factory(graph)
    else:
        from . import collect as protocols
        collect = protocols.open_collector
    if settings.send_by == "graph":
        from .graph_send import GraphSender
        send = GraphSender(graph)
    else:
        from . import smtp
        send = smtp.send
    return Transports(collect, send, graph.close if graph is not None else _nothing)
