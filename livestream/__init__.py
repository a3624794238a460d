"""livestream: real-time AI video and Livepeer AI runner endpoints on one GPU box."""

import logging

__version__ = "0.1.0"
__all__ = ["__version__"]

logging.getLogger(__name__).addHandler(logging.NullHandler())
