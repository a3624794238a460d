"""Livepeer's trickle protocol: HTTP segment streaming (server, publisher, subscriber)."""

import logging

from .channel import Channel
from .errors import (
    TrickleChannelError,
    TrickleChannelLimitError,
    TrickleClientError,
    TrickleConfigError,
    TrickleError,
    TrickleHTTPError,
    TricklePublishError,
    TrickleReadError,
    TrickleRequestError,
    TrickleRetriesExhaustedError,
    TrickleStreamClosedError,
    TrickleStreamGoneError,
    TrickleStreamNotFoundError,
    TrickleWriteTimeoutError,
)
from .publisher import SegmentWriter, TricklePublisher
from .server import TRICKLE_SERVER_KEY, TrickleServer, TrickleServerConfig, create_trickle_app
from .subscriber import TrickleSegment, TrickleSubscriber

__all__ = [
    "TRICKLE_SERVER_KEY",
    "Channel",
    "SegmentWriter",
    "TrickleChannelError",
    "TrickleChannelLimitError",
    "TrickleClientError",
    "TrickleConfigError",
    "TrickleError",
    "TrickleHTTPError",
    "TricklePublishError",
    "TricklePublisher",
    "TrickleReadError",
    "TrickleRequestError",
    "TrickleRetriesExhaustedError",
    "TrickleSegment",
    "TrickleServer",
    "TrickleServerConfig",
    "TrickleStreamClosedError",
    "TrickleStreamGoneError",
    "TrickleStreamNotFoundError",
    "TrickleSubscriber",
    "TrickleWriteTimeoutError",
    "create_trickle_app",
]

logging.getLogger(__name__).addHandler(logging.NullHandler())
