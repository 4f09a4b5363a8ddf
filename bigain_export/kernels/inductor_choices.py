"""One Inductor heuristic changed: a norm over gathered rows runs as a persistent reduction.

Under ``torch.compile`` the unmerge is a gather Inductor fuses into its readers (launch.
UNMERGE_IN_GRAPH). The norm reading it then has an indirect load, so Inductor gives its reduction
the hint DEFAULT rather than INNER, and a DEFAULT reduction over more than 64 elements gets a looped
kernel that reads every row three times: at SD2 768 px 24.9 against 11.3 us a launch for plain's
persistent norm, +68 us a call (docs/benchmarks.md, session 28). Yet each gathered row is read
whole and contiguously, one row per output, exactly as a plain norm reads its rows.

:class:`GatheredRowChoices` (an ``InductorChoices``, the seam Inductor offers for its heuristics)
keeps every decision of Inductor's except one: a reduction whose hint is DEFAULT only because of
indirect loads that are contiguous along the reduced dimension gets the threshold Inductor gives an
INNER reduction (1024 elements). Two ways to put it in place, both keyed on
``launch.PERSISTENT_GATHER_NORMS`` (False: not in any default until a GPU benchmark shows it pays):
:func:`hold` while a model is patched to merge (``apply_bigain`` holds it, ``remove_bigain`` lets go),
so that a user's own ``torch.compile`` gets it; :func:`installed` around one compile (the benchmarks'
``--variant PERSISTENT_GATHER_NORMS=True``).
"""

from __future__ import annotations

import contextlib
import itertools
import weakref
from typing import Any, Iterator

import sympy
from torch._inductor import config
from torch._inductor.choices import InductorChoices
from torch._inductor.dependencies import MemoryDep
from torch._inductor.runtime.hints import ReductionHint
from torch._inductor.virtualized import V

INNER_PERSISTENT_LIMIT = 1024  # Inductor's own threshold for an INNER reduction
decisions_changed = 0  # reductions this rule made persistent in this process (benchmarks print it)


def _unit_stride_last(dep: MemoryDep) -> bool:
    """The access's last (innermost) index appears once, with stride 1."""
    if not dep.var_names:
        return False
    last = dep.var_names[-1]
    terms = dep.index.args if isinstance(dep.index, sympy.Add) else (dep.index,)
    return last in terms and sum(last in term.free_symbols for term in terms) == 1


def _rows_read_whole(features) -> bool:
    """Every load and store of the kernel is contiguous, or an indirect (gathered) load whose
    last index, the reduced one, has stride 1: whole rows, only their order gathered."""
    gathered = False
    for node in features.scheduler_nodes():
        for dep in itertools.chain(node.read_writes.reads, node.read_writes.writes):
            if not isinstance(dep, MemoryDep):
                return False
            if dep.is_contiguous():
                continue
            if dep.is_indirect() and _unit_stride_last(dep):
                gathered = True
                continue
            return False
    return gathered


def persistent_for_gathered_rows(features, cooperative_reduction: bool) -> bool:
    """Whether the rule above makes this reduction persistent where Inductor would loop."""
    if cooperative_reduction or features.get_reduction_hint() != ReductionHint.DEFAULT:
        return False
    numel = features.reduction_numel
    if not getattr(numel, "is_number", False) or int(numel) > INNER_PERSISTENT_LIMIT:
        return False
    return _rows_read_whole(features)


class GatheredRowChoices(InductorChoices):
    """Inductor's choices, with norms over gathered rows persistent (module docstring)."""

    @staticmethod
    def should_use_persistent_reduction(features, cooperative_reduction, *args, **kwargs) -> bool:
        if InductorChoices.should_use_persistent_reduction(features, cooperative_reduction, *args, **kwargs):
            return True
        global decisions_changed
        try:
            changed = persistent_for_gathered_rows(features, cooperative_reduction)
        except (AttributeError, TypeError):  # another torch's internals: keep Inductor's answer
            return False
        decisions_changed += changed
        return changed

    def uuid(self) -> str:  # Inductor's cache key (torch >= 2.12 asks for it; older ones pickle the class)
        return "bigain_export.GatheredRowChoices.v1"


def _in_place() -> tuple[Any, Any] | None:
    """(config value, handler) as they are, or None where another package's choices are in place."""
    saved_class = getattr(config, "inductor_choices_class", None)
    saved_handler = V.choices
    if saved_class not in (None, GatheredRowChoices) or type(saved_handler) not in (InductorChoices, GatheredRowChoices):
        return None
    return saved_class, saved_handler


def _put(choices_class: Any, handler: Any) -> None:
    """Inductor's config (read by new threads and, through ``uuid()``, the cache key) and this
    thread's handler."""
    if hasattr(config, "inductor_choices_class"):
        config.inductor_choices_class = choices_class
    V.set_choices_handler(handler)


@contextlib.contextmanager
def installed() -> Iterator[bool]:
    """Inductor uses :class:`GatheredRowChoices` inside the block, restored after. Yields False,
    changing nothing, where another package's choices are in place."""
    saved = _in_place()
    if saved is None:
        yield False
        return
    _put(GatheredRowChoices, GatheredRowChoices())
    try:
        yield True
    finally:
        _put(*saved)


class Hold:
    """One holder's claim on the rule (:func:`hold`); a deep copy of it claims nothing."""


_holds: weakref.WeakSet = weakref.WeakSet()  # the live claims (a patched model's record keeps its own)
_before_hold: tuple[Any, Any] | None = None  # (config value, handler) to restore after the last


def hold() -> Hold | None:
    """Put the rule in place for as long as the returned claim is held: the first claim installs
    it, :func:`release` of the last restores what was there. None, changing nothing, where another
    package's choices are in place."""
    global _before_hold
    if not _holds:
        saved = _in_place()
        if saved is None:
            return None
        saved_class, saved_handler = saved
        # inside an installed() block, what the block will restore is Inductor's own: restore that too
        _before_hold = (None if saved_class is GatheredRowChoices else saved_class,
                        InductorChoices() if type(saved_handler) is GatheredRowChoices else saved_handler)
        _put(GatheredRowChoices, GatheredRowChoices())
    claim = Hold()
    _holds.add(claim)
    return claim


def release(claim: Hold | None) -> None:
    """Let go of ``claim`` (nothing for None or a claim not held: a deep copy's)."""
    global _before_hold
    if claim is None or claim not in _holds:
        return
    _holds.discard(claim)
    if not _holds and _before_hold is not None:
        _put(*_before_hold)
        _before_hold = None
