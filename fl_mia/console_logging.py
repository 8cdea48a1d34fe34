"""Each log line once on the console, whatever the libraries imported did to the root logger.

``opacus.utils.module_utils`` calls ``logging.basicConfig`` when first imported (the
defences and the GroupNorm fixer import opacus), which gives the root logger a timestamped
stderr handler. Flower's ``flwr`` logger has its own coloured console handler and also
propagates to the root, so under ``flwr run`` every Flower line printed twice.
"""

from __future__ import annotations

import logging

OPACUS_ROOT_FORMAT = "%(asctime)s:%(levelname)s:%(message)s"


def drop_opacus_root_handler() -> list[logging.Handler]:
    """Remove the root handler opacus installs on import; return what was removed."""
    root = logging.getLogger()
    dropped = [
        handler for handler in root.handlers
        if type(handler) is logging.StreamHandler
        and handler.formatter is not None and handler.formatter._fmt == OPACUS_ROOT_FORMAT
    ]
    for handler in dropped:
        root.removeHandler(handler)
    return dropped


def flower_lines_once() -> None:
    """Flower's records go to Flower's console handler only, never also to a root handler.

    Called where Flower loads fl-mia's apps (ServerApp and ClientApp processes). The root
    handler itself stays: under ``fl-mia run`` it is the driver's, and only the ServerApp
    of ``flwr run`` drops it (:mod:`fl_mia.app.flwr_run`).
    """
    logging.getLogger("flwr").propagate = False
