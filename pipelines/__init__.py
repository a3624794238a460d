"""AI pipelines: batch (request -> result) and live (frames -> frames). No HTTP here."""

import logging

logging.getLogger(__name__).addHandler(logging.NullHandler())
