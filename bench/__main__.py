"""Dispatch ``python -m bench NAME [options]`` to ``bench.NAME_bench.main``; with no NAME, run them all.

``python -m bench --check`` runs them all and passes ``--check`` to those with goals (``HAS_GOALS``), so the
exit code is 1 when one of their goals is missed.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
import sys
from collections.abc import Callable, Sequence

import bench
from genserve.console import quiet_tensorflow

_SUFFIX = "_bench"
_CHECK = "--check"


def available() -> list[str]:
    """Names of the benchmarks in this package (modules called ``NAME_bench``)."""
    modules = (module.name for module in pkgutil.iter_modules(bench.__path__))
    return sorted(name.removesuffix(_SUFFIX) for name in modules if name.endswith(_SUFFIX))


def _entry_point(name: str) -> Callable[[Sequence[str]], int]:
    # Loads TensorFlow, for the benchmarks that use it, with its start-up notices kept off the console.
    quiet_tensorflow(modules=(f"bench.{name}{_SUFFIX}",))
    module = importlib.import_module(f"bench.{name}{_SUFFIX}")
    entry: Callable[[Sequence[str]], int] = module.main
    return entry


def _has_goals(name: str) -> bool:
    return bool(getattr(importlib.import_module(f"bench.{name}{_SUFFIX}"), "HAS_GOALS", False))


def main(argv: Sequence[str]) -> int:
    names = available()
    if argv and argv[0] in ("-h", "--help"):
        print(
            f"usage: python -m bench [{'|'.join(names)}] [options]; no name runs them all "
            f"({_CHECK}: exit 1 when a goal is missed)"
        )
        return 0
    check = list(argv) == [_CHECK]
    if argv and not check and argv[0] not in names:
        print(
            f"python -m bench: error: unknown benchmark {argv[0]!r}; choose one of {', '.join(names)}",
            file=sys.stderr,
        )
        return 2
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # Progress is the benchmarks' own lines; an HTTP client's line per request (readiness polls) is noise.
    for client in ("httpx", "httpcore"):
        logging.getLogger(client).setLevel(logging.WARNING)
    if argv and not check:
        return _entry_point(argv[0])(list(argv[1:]))
    return max(
        (_entry_point(name)([_CHECK] if check and _has_goals(name) else []) for name in names), default=0
    )


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
