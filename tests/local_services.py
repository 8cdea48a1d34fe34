"""Services the slow deployment tests start on localhost and stop again: only their own.

The helpers live in the app layer (``fl-mia suite`` starts a private Ray head too); this
module gathers what the tests use.
"""

from __future__ import annotations

from fl_mia.app.processes import free_port, stop_processes
from fl_mia.app.ray_head import processes_mentioning, ray_head

__all__ = ["free_port", "processes_mentioning", "ray_head", "stop_processes"]
