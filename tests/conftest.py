import sys
from pathlib import Path

# tests/helpers.py is imported as `helpers` by the test modules.
sys.path.insert(0, str(Path(__file__).resolve().parent))

# The modules that train with verl's real trainer (minutes each), longest first. Collected first,
# they start first under `-n 2 --dist loadfile` (xdist hands out files in collection order), so the
# two workers end together instead of one running the longest training alone at the end.
SLOW_MODULES_FIRST = ("test_rehearse.py", "test_compare.py", "test_main_ppo_cpu.py", "test_packaging.py")


def pytest_collection_modifyitems(session, config, items):
    rank = {name: position for position, name in enumerate(SLOW_MODULES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(SLOW_MODULES_FIRST)))  # stable: the rest keep their order
