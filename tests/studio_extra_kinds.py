"""`python -m tests.studio_extra_kinds <app flags>`: the studio with one more kind on the RLHF tab (a second DPO
entry with a samples panel), so the stage dropdown and the panels are tested before every RLHF kind exists."""
from __future__ import annotations

import sys

from app import kinds

kinds.register(kinds.Kind("dpo_b", "backends.dpo", "backends.dpo:DPOArgs", "backends.dpo:validate_config",
                          tab="rlhf", stage="stage.dpo_b", default_recipe="cpu-demo-smollm2-dpo",
                          series=("loss",), produces="policy", panels=("samples",)))

if __name__ == "__main__":
    from app.__main__ import main

    sys.exit(main(sys.argv[1:]))
