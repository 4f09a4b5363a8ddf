#!/bin/bash
# Session 25's planned call 3 (SD2 768 px with plain-copy). It never got a machine, and its
# plain-copy would have rerun plain's own compiled graph (docs/benchmarks.md, "Session 26"):
# superseded by docs/bench/2026-12-07-gpu-session26/s26c.sh.
exec bash docs/bench/2026-12-07-gpu-session26/s26c.sh "$@"
