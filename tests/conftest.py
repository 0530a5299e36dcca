"""Test kinds, declared per module or per test, and the order they run in.

Every test has exactly one kind, a pytest marker:
  unit      no verl trainer, workers or subprocess (enforced: a unit test that starts a process fails): seconds;
  verl      verl's config composition, registry, workers or dry runs, in this process or a subprocess,
            without a training step; also any other test that starts a process (a script, a linter);
  training  verl's trainer on CPU for at least one step: minutes. `training(minutes=N)` gives the
            rough length, so the longest start first and the two xdist workers end together.
A module states its default with `pytestmark = pytest.mark.kind("unit")`; a test that differs carries its
own `@pytest.mark.verl` / `@pytest.mark.training(...)`. `-m unit`, `-m "not unit"`, `-m training` select
by the resolved kind. scripts/run_tests.sh runs `ruff`, then `-m unit`, then the rest.
"""

import sys
from pathlib import Path

import pytest

# tests/helpers.py is imported as `helpers` by the test modules.
sys.path.insert(0, str(Path(__file__).resolve().parent))

KINDS = ("unit", "verl", "training")


def _kind(item) -> str:
    own = [mark.name for mark in item.iter_markers() if mark.name in KINDS]
    if len(set(own)) > 1:
        raise pytest.UsageError(f"{item.nodeid}: more than one test kind marker: {sorted(set(own))}")
    if own:
        return own[0]
    default = item.get_closest_marker("kind")
    if default is None or default.args[:1] == () or default.args[0] not in KINDS:
        raise pytest.UsageError(
            f'{item.nodeid}: no test kind; give its module `pytestmark = pytest.mark.kind("unit")` (one of '
            f"{', '.join(KINDS)}) or the test its own marker"
        )
    item.add_marker(default.args[0])  # before -m selects: `-m unit` sees the resolved kind
    return default.args[0]


def _minutes(item) -> float:
    mark = item.get_closest_marker("training")
    return float(mark.kwargs.get("minutes", 1)) if mark is not None else 0.0


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session, config, items):
    order = {kind: position for position, kind in enumerate(("training", "verl", "unit"))}
    kinds = {item.nodeid: _kind(item) for item in items}
    # Longest first: under `-n 2 --dist loadfile` xdist hands out files in collection order.
    items.sort(key=lambda item: (order[kinds[item.nodeid]], -_minutes(item)))  # stable within a kind


@pytest.fixture(autouse=True)
def _unit_tests_start_no_process(request, monkeypatch):
    """A `unit` test promises no subprocess: starting one fails it, naming the kind to give it instead."""
    if request.node.get_closest_marker("unit") is None:
        return
    import subprocess

    def refuse(*args, **kwargs):
        raise RuntimeError(
            f"{request.node.nodeid} is a unit test but started a subprocess ({args[0] if args else kwargs}): "
            "give it the kind `verl` or `training`"
        )

    monkeypatch.setattr(subprocess, "Popen", refuse)
