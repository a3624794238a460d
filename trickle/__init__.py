"""Livepeer's trickle protocol: HTTP segment streaming (server, publisher, subscriber)."""

import logging

logging.getLogger(__name__).addHandler(logging.NullHandler())
