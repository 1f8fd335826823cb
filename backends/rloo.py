"""RLOO (REINFORCE leave-one-out) with TRL's RLOOTrainer, the reward model as reward: backends/grpo.py's program
as the ``rloo`` kind (its own schema, RLOOArgs).

    python -m backends.rloo --config FILE [--field value ...]
"""
from __future__ import annotations

import sys

from backends.grpo import RLOOArgs, main as _main, train_rloo, validate_rloo

KIND = "rloo"
SCHEMA = RLOOArgs


def main(argv: list[str] | None = None) -> int:
    return _main(argv, kind=KIND)


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["KIND", "SCHEMA", "RLOOArgs", "main", "train_rloo", "validate_rloo"]
