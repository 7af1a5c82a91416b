"""zone-agent: the edge agent that runs one warehouse zone (a "node") on a Raspberry Pi."""

__version__ = "0.1.0"
