"""The wire contract: message models, the msgpack codec and the topic names.

Pure and below the store (the store encodes an event's envelope inside the transaction that
assigns its seq). Only ``agent.wire.codec`` imports msgpack. The I/O that carries these
messages lives one floor up, in :mod:`agent.link`.
"""
