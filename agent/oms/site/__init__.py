"""The site service: one process a site runs beside its broker (``zone-agent site serve``).

It is the site's OMS on the wire, so that no other OMS has to be: it keeps the
exactly-once protocol toward every node (``agent.oms.client``), writes every node event to
a durable log before acknowledging it, routes submitted orders with
``agent.oms.fulfilment``, and serves the log, orders and commands over an HTTP API
(OpenAPI 3.1: docs/openapi.yaml) with signed webhooks, for an OMS in any language.

* ``log``: the event log and the service's tables (SQLite; ``pglog``: PostgreSQL);
* ``service``: leadership, the event pump (log, then acknowledge), routing, commands;
* ``api``: the HTTP API (FastAPI);
* ``webhooks``: Standard Webhooks signing and delivery;
* ``settings``: the site file; ``commands``: ``zone-agent site ...``.

Nothing on a node imports it (tests/test_layering.py).
"""
