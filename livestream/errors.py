"""Engine errors.

    LivestreamError
     ├── ConfigError (ValueError)       bad flag or environment value
     └── SessionError                   a live session could not start or failed
          ├── SessionLimitError         too many live sessions
          └── StreamBusyError           a direct stream of that name is already publishing
"""

from __future__ import annotations

__all__ = ["ConfigError", "LivestreamError", "SessionError", "SessionLimitError", "StreamBusyError"]


class LivestreamError(Exception):
    """Base class of the engine's own errors."""


class ConfigError(LivestreamError, ValueError):
    """A configuration value is invalid."""


class SessionError(LivestreamError):
    """A live session could not start or ended with an error."""


class SessionLimitError(SessionError):
    """The engine already runs its maximum number of live sessions."""


class StreamBusyError(SessionError):
    """A stream of that name is already being published (a second publisher is refused)."""
