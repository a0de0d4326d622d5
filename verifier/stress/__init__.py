"""Embedded connection-churn flood: drives a loopback memcached to its connection limit.

with Flood(FloodConfig(port=port, duration_s=30)) as flood:
    while flood.running:
        time.sleep(1)
        print(flood.snapshot().render())
"""

from verifier.stress.config import COMMANDS, FloodConfig, FloodConfigError, require_loopback
from verifier.stress.flood import Flood
from verifier.stress.stats import ErrorCounts, ErrorKind, FloodStats, render_progress

__all__ = [
    "COMMANDS",
    "ErrorCounts",
    "ErrorKind",
    "Flood",
    "FloodConfig",
    "FloodConfigError",
    "FloodStats",
    "render_progress",
    "require_loopback",
]
