"""The reference OMS side: what runs centrally, not on a zone's Pi.

Nothing on a node imports this package (tests/test_layering.py holds it so); it talks to
the nodes only over the broker, as a real OMS would:

* ``client``: the exactly-once OMS client (births, events in order once, acks, resends);
* ``fulfilment``: routing an order file's orders pick -> wall -> pack -> dispatch, returns;
* ``kpi``: the order guide's KPIs from the events received;
* ``dashboard``: the supervisor's live page for the whole site (``zone-agent oms serve``);
* ``commands``: the ``zone-agent oms`` commands (watch, kpi, dispatch, send, serve);
* ``demo``: the warehouse demo (``python -m agent.oms.demo``, ``make demo``).

The client's names are re-exported here: ``from agent.oms import OmsClient``.
"""

from agent.oms.client import NodeEvent, NodeView, OmsClient, PendingCommand, Stream, event_record

__all__ = ["NodeEvent", "NodeView", "OmsClient", "PendingCommand", "Stream", "event_record"]
