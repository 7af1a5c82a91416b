"""The one error tree of zone-agent.

Errors are named by what happens next, so a caller can decide without reading text::

    AgentError
    ├── ConfigError              fix the file; nothing starts (file, field and reason)
    ├── MessageRejected          a bad inbound message: reply "rejected", log once, carry on
    ├── StoreError               the state directory is unusable: stop, systemd restarts us
    │   ├── StoreTooNew          a newer release's store (a downgrade): stop for good
    │   └── OutboxFull           back-pressure: refuse new work until the OMS acknowledges
    ├── LinkUnavailable          the broker cannot be reached: retry with backoff
    └── DeviceError              anything a driver raises; vendor exceptions end here
        ├── DeviceUnavailable    gone or unreachable (unplugged, refused): reopen with backoff
        ├── DeviceFault          needs a person (paper out, head open, overload): raise an alarm
        └── DeviceProtocolError  the device answered nonsense: count it, retry the request

The root and the drivers' branch live at the bottom layer, in ``devices.errors``, so that
drivers own their errors and imports point down; this module adds the agent's own and
re-exports those, so ``agent.errors`` names the whole tree.
"""

from __future__ import annotations

from devices.errors import (
    AgentError,
    DeviceError,
    DeviceFault,
    DeviceProtocolError,
    DeviceUnavailable,
)

__all__ = [
    "EXIT_DEVICE",
    "EXIT_FAILURE",
    "EXIT_OK",
    "EXIT_USAGE",
    "AgentError",
    "ConfigError",
    "DeviceError",
    "DeviceFault",
    "DeviceProtocolError",
    "DeviceUnavailable",
    "LinkUnavailable",
    "LoginRefused",
    "MessageRejected",
    "OutboxFull",
    "StateDirLocked",
    "StoreError",
    "StoreTooNew",
]


# The process's exit codes, beside the errors that map to them (README, "Exit codes"):
EXIT_OK = 0  # done, or stopped cleanly by SIGTERM/SIGINT
EXIT_FAILURE = 1  # a runtime failure (store unusable, a bug): systemd restarts the service
EXIT_USAGE = 2  # bad usage, an invalid node file, a newer release's store: restarting will not help
EXIT_DEVICE = 3  # a device could not be reached by a commissioning command


class ConfigError(AgentError):
    """A node file (or a setting) is invalid; nothing is started.

    Args:
        file: the file that holds the mistake ("<env>" for environment variables).
        field: the dotted path of the field, e.g. ``devices[2].port``.
        reason: what is wrong, in words an installer understands.
        problems: every ``(field, reason)`` found when more than one thing is wrong.
        lines: the line of the file each field is written on (or its table's, for a
            missing field), where it is known.
    """

    def __init__(
        self,
        file: str,
        field: str,
        reason: str,
        problems: list[tuple[str, str]] | None = None,
        lines: dict[str, int] | None = None,
    ) -> None:
        self.lines = lines or {}
        super().__init__(f"{self.where(field, file)}: {field}: {reason}")
        self.file = file
        self.field = field
        self.reason = reason
        self.problems = problems or [(field, reason)]

    def where(self, field: str, file: str | None = None) -> str:
        """``file:line`` of ``field`` when its line is known, else the file."""
        name = self.file if file is None else file
        line = self.lines.get(field)
        return name if line is None else f"{name}:{line}"


class MessageRejected(AgentError):
    """An inbound message is invalid and is never acted on.

    Args:
        reason: a short machine-readable code (``too_large``, ``bad_msgpack``, ...).
        detail: a human-readable explanation for the log and the rejected reply.
        message_id: the message id, when it could be read, so the reply can name it.
    """

    def __init__(self, reason: str, detail: str = "", message_id: str | None = None) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
        self.message_id = message_id


class StoreError(AgentError):
    """The SQLite store cannot be opened or written."""


class StoreTooNew(StoreError):
    """The store's schema is newer than this release knows: restarting cannot fix it."""


class StateDirLocked(StoreError):
    """Another process runs a node on this state directory: exit 2, a restart cannot help."""


class OutboxFull(StoreError):
    """The outbox holds as many unacknowledged events as it may; nothing new is accepted."""


class LinkUnavailable(AgentError):
    """No broker can be reached right now; the link retries with backoff."""


class LoginRefused(LinkUnavailable):
    """The broker refused this client's login (credentials, certificate, ACL on CONNECT).

    Retrying with the same settings cannot help: a command says so and exits 2.
    """
