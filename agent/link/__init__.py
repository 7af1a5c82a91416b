"""The wire: message models, codec, topics, MQTT transport and the outbox sender.

Only ``agent.link.codec`` imports msgpack and only ``agent.link.transport`` imports aiomqtt.
"""
