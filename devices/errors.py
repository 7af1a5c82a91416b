"""The root of zone-agent's error tree and the drivers' branch of it.

::

    AgentError                   root of every error zone-agent raises on purpose
    └── DeviceError              anything a driver raises; vendor exceptions end here
        ├── DeviceUnavailable    gone or unreachable (unplugged, refused): reopen with backoff
        ├── DeviceFault          needs a person (paper out, head open, overload): raise an alarm
        └── DeviceProtocolError  the device answered nonsense: count it, retry the request

They live here, in the bottom layer, so drivers own their errors and import nothing from
``agent``; ``agent.errors`` adds the agent's own branches and names the whole tree.
"""

from __future__ import annotations


class AgentError(Exception):
    """Root of every error zone-agent raises on purpose."""


class DeviceError(AgentError):
    """Base of every error a device driver raises."""


class DeviceUnavailable(DeviceError):
    """The device is gone or unreachable; the driver reopens it with backoff."""


class DeviceFault(DeviceError):
    """The device reports a condition a person must clear (paper out, head open, overload)."""


class DeviceProtocolError(DeviceError):
    """The device answered something that is not its protocol; the request may be retried."""
