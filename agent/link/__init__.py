"""The link to the broker: the MQTT transport, its settings and the outbox sender.

Above the store (the outbox sender reads it) and below the node. Only
``agent.link.transport`` imports aiomqtt and paho; the message models and the codec it
carries are in :mod:`agent.wire`.
"""
