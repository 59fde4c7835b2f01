"""Coverage-guided fuzzing of the network parsers with atheris (libFuzzer).

    python -m tests.fuzz.run_atheris [TARGET|all] [libFuzzer options...]

TARGET is a name from ``tests.fuzz.targets.TARGETS`` (default ``all``: one process fuzzes
every parser, the first input byte choosing which). Options go to libFuzzer, e.g.
``-max_total_time=600`` for a long run, ``-runs=N``, or a corpus directory to keep findings
between runs. A finding stops the run, prints the traceback and writes ``crash-*`` with the
input; replay it with ``python -m tests.fuzz.run_atheris TARGET crash-FILE``.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["ehco_gevent"]):
    from tests.fuzz.targets import TARGETS, all_targets


def main(argv: list[str]) -> None:
    name = "all"
    if len(argv) > 1 and not argv[1].startswith("-") and argv[1] in (*TARGETS, "all"):
        name = argv.pop(1)
    target = all_targets if name == "all" else TARGETS[name]
    atheris.Setup(argv, target)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
