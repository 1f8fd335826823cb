"""A tiny hand-written training loop on the shared runner + Loop (the shape PPO and SD distillation use).

`python -m tests.loop_toy --config FILE [--steps N --sleep S --save_steps K]`: fits y = 3x with one weight,
saves weight + optimizer state + step in each checkpoint, resumes from `latest`.
"""
from __future__ import annotations

import dataclasses
import time

from backends.common import config as C
from backends.common import runner
from backends.common.loop import Loop


@dataclasses.dataclass
class ToyArgs(C.JobFields):
    steps: int = dataclasses.field(default=6, metadata=C.meta("training", "Steps", "步数", "steps", "步数", min=1))
    sleep: float = dataclasses.field(default=0.0, metadata=C.meta("training", "Sleep", "等待", "s/step", "秒/步", min=0))
    save_steps: int = dataclasses.field(default=2, metadata=C.meta("training", "Save", "保存", "every", "每", min=1))


def run(cfg: ToyArgs, job: runner.Job) -> dict:
    import torch

    loop = Loop("toy", cfg, job, total_steps=cfg.steps, global_batch=8, save_every=cfg.save_steps,
                save_total_limit=2, show=("w",))
    w = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([w], lr=0.1)
    state = loop.resume_state()
    if state:
        ck = torch.load(f"{job.resume}/toy.pt")
        w.data.copy_(ck["w"])
        opt.load_state_dict(ck["opt"])
    step = loop.begin(state.get("step", 0))
    g = torch.Generator().manual_seed(step)
    while step < cfg.steps:
        with loop.step():
            x = torch.randn(8, generator=g)
            loss = ((w * x - 3 * x) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            time.sleep(cfg.sleep)
        step = loop.step_count
        loop.add_tokens(8)
        loop.log(loss=float(loss), learning_rate=0.1, w=float(w))
        if loop.should_save() or loop.stopping:
            loop.save_checkpoint(lambda d: torch.save({"w": w.data, "opt": opt.state_dict()}, d / "toy.pt"),
                                 extra_state={"w": float(w)})
        if loop.stopping:
            break
    loop.finishing()
    job.output_dir.mkdir(parents=True, exist_ok=True)
    (job.output_dir / "w.txt").write_text(f"{float(w)}\n")
    return loop.end(final_w=float(w))


def main(argv=None) -> int:
    return runner.main("toy", ToyArgs, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
