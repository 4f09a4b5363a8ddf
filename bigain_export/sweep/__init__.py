"""The speed-accuracy trade-off of every method on one model: ``bigain-export sweep`` (docs/sweep.md).

* :mod:`.grid`: entries (named configs), points (entry x mode x seed), grid files;
* :mod:`.run`: :func:`run_sweep` measures every point with validate's sharded machinery, resumably;
* :mod:`.latency`: ms per denoiser call and FLOPs per call on the current device;
* :mod:`.pareto`: Pareto fronts and the ``--max-acc-drop`` / ``--max-fid-rise`` answer;
* :mod:`.report`, :mod:`.plots`: ``sweep.json``, ``sweep.md`` and the trade-off PNGs.
"""

from .grid import GridEntry, SweepPoint, default_grid, expand, load_grid_file, parse_entry
from .latency import LatencySettings
from .pareto import Budget, fastest_within, pareto_front
from .run import SweepSettings, run_sweep

__all__ = [
    "Budget",
    "GridEntry",
    "LatencySettings",
    "SweepPoint",
    "SweepSettings",
    "default_grid",
    "expand",
    "fastest_within",
    "load_grid_file",
    "pareto_front",
    "parse_entry",
    "run_sweep",
]
