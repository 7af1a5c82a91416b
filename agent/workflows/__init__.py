"""Domain state machines: picking, put wall, packing. Events in, effects out; no I/O."""
