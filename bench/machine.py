"""The machine a benchmark ran on, for its header: CPU model and load average."""
from __future__ import annotations

import os

from fastnet.util.cpu import cpu_id


def cpu_model() -> str:
    """The CPU: its model name with its family and model numbers (one name, such as "AMD EPYC",
    can cover several generations; fastnet.util.cpu)."""
    return cpu_id()


def loadavg() -> str:
    """The 1-, 5- and 15-minute load averages, or "?" where the platform has none."""
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"
