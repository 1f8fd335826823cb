"""The models of DeepSpeed-Chat step 3 (``dschat/rlhf/rlhf_engine.py``): actor, reference, critic, reward model.

DS-Chat holds four models: the actor (trained), a frozen reference copy of it, the critic (trained, initialised
from the reward model) and the frozen reward model. Here, with LoRA, two copies of base weights do the job:

- **reference = the actor with its adapter disabled** (``peft``'s ``disable_adapter()``); when the actor starts
  from an SFT LoRA result, that adapter keeps training and a frozen copy of it is loaded next to it as the
  ``ref`` adapter, so the reference is the SFT policy itself (as in backends/dpo.py);
- **reward model = the critic with its adapter disabled**: the critic is the reward model + its own LoRA adapter
  + a trainable copy of the score head (``modules_to_save``), so the frozen RM is the same weights.

Without LoRA (``*_lora_dim`` 0) the frozen copies are real copies, as in DS-Chat.

Shared with the other RLHF recipes: :func:`load_reward_model` + :func:`score_texts` (a reward model's scores of
prompt + answer texts, rendered by :func:`reward_text` the way the A/B tab scores them).
"""
from __future__ import annotations

import copy
import json
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backends.common import data as datalib
from backends.common import modeling

REF_ADAPTER = "ref"
BETAS = (0.9, 0.95)  # DS-Chat's AdamW betas (rlhf_engine.py)


# ------------------------------------------------------------------------------ reward scoring (shared)
def reward_text(prompt_text: str, answer: str, template: str, eos_token: str = "") -> str:
    """What a reward model reads (datalib.reward_text: the text TRL trained it on, as the A/B tab scores it)."""
    return datalib.reward_text(prompt_text, answer, template, eos_token)


def load_reward_model(path: str, *, dtype: str = "fp32", device: str = "cpu"):
    """(model, tokenizer) of a 1-label sequence classifier, frozen, in eval mode."""
    from transformers import AutoModelForSequenceClassification

    tok = modeling.load_tokenizer(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=modeling.torch_dtype(dtype))
    model.config.pad_token_id = tok.pad_token_id
    model.requires_grad_(False)
    return model.to(device).eval(), tok


def token_values(model, input_ids, attention_mask):
    """Per-token outputs of a sequence classifier's score head, [B, S] (DS-Chat's RewardModel.forward_value:
    the critic's values). Works on a plain model and on a PEFT-wrapped one (adapter layers and the adapter's
    score copy are used unless disabled)."""
    cls = model.get_base_model() if hasattr(model, "get_base_model") else model  # PeftModel -> the HF model
    body = getattr(cls, cls.base_model_prefix)
    hidden = body(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
    return cls.score(hidden).squeeze(-1).float()


def last_token_scores(values, attention_mask, input_ids=None, pad_token_id=None):
    """The value at each row's last token (right padding): the reward model's score of the text. With input_ids
    and pad_token_id, HF's sequence-classification rule: the last token that is not the pad token (with pad ==
    eos, as in SmolLM2, an appended eos is not the one scored -- exactly as in TRL's RewardTrainer)."""
    import torch

    real = attention_mask.bool()
    if input_ids is not None and pad_token_id is not None:
        real = real & (input_ids != pad_token_id)
    pos = torch.arange(real.shape[1], device=real.device).expand_as(real)
    idx = (pos * real).amax(1).long()
    return values[torch.arange(values.shape[0], device=values.device), idx]


def score_texts(model, tokenizer, texts: list[str], *, max_length: int = 2048, batch_size: int = 16):
    """Reward-model scores of whole texts (prompt + answer), a float tensor [len(texts)], no gradients."""
    import torch

    out = []
    side = tokenizer.padding_side
    tokenizer.padding_side = "right"
    try:
        dev = next(model.parameters()).device
        for i in range(0, len(texts), batch_size):
            # tokenized as TRL's RewardTrainer and the A/B scorer do (special tokens included: OPT's bos)
            enc = tokenizer(texts[i:i + batch_size], return_tensors="pt", padding=True, truncation=True,
                            max_length=max_length).to(dev)
            with torch.no_grad():
                out.append(last_token_scores(token_values(model, enc["input_ids"], enc["attention_mask"]),
                                             enc["attention_mask"], enc["input_ids"], tokenizer.pad_token_id).cpu())
    finally:
        tokenizer.padding_side = side
    return torch.cat(out) if out else torch.zeros(0)


# ------------------------------------------------------------------------------------ the engine
def unwrap(model):
    """The nn.Module inside a DeepSpeed engine (or the model itself)."""
    return getattr(model, "module", model)


def disable_dropout(model) -> None:
    """DS-Chat's scripts run step 3 with --actor_dropout 0.0: PPO's old/new log-probs must be deterministic."""
    import torch

    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0


def trainable_state(model) -> dict:
    return gathered_state(model, trainable_only=True)


def load_trainable_state(model, state: dict) -> None:
    import torch

    params = dict(unwrap(model).named_parameters())
    missing = [n for n in state if n not in params]
    if missing:
        raise RuntimeError(f"checkpoint has parameters this model lacks: {missing[:3]}")
    with torch.no_grad():
        for n, t in state.items():
            params[n].data.copy_(t.to(params[n].device, params[n].dtype))


def count_params(model) -> tuple[int, int]:
    ps = list(unwrap(model).parameters())
    n = [getattr(p, "ds_numel", p.numel()) for p in ps]  # ZeRO-3 leaves an empty local tensor: ds_numel is the size
    return sum(n), sum(k for k, p in zip(n, ps) if p.requires_grad)


@contextmanager
def gathered(params):
    """The full values of ZeRO-3-partitioned parameters inside the block (deepspeed.zero.GatheredParameters; a
    collective: every rank enters it with the same parameters). Parameters ZeRO-3 does not own pass through."""
    ps = [p for p in params if hasattr(p, "ds_id")]
    if not ps:
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(ps):
        yield


def gathered_state(model, *, trainable_only: bool) -> dict:
    """{name: full CPU tensor} of a model's parameters (trainable ones only, or its whole state_dict with the
    buffers), gathered one parameter at a time under ZeRO-3 as DS-Chat's save_zero_three_model does. A collective
    under ZeRO-3: call it on every rank."""
    model = unwrap(model)
    # a whole state_dict names a tied parameter under each of its names (lm_head.weight = the embeddings)
    named = list(model.named_parameters(remove_duplicate=trainable_only))
    out = {} if trainable_only else dict(model.state_dict())
    for n, p in named:
        if trainable_only and not p.requires_grad:
            continue
        with gathered([p]):
            out[n] = p.detach().cpu().clone()
    return out


@dataclass
class RLHFEngine:
    """The four roles over two or four models, their optimizers and schedulers (DeepSpeed engines or torch)."""

    tokenizer: Any
    actor: Any                   # trained: a PeftModel / HF causal LM, or a DeepSpeed engine around it
    critic: Any                  # trained: a PeftModel / HF sequence classifier, or a DeepSpeed engine
    ref: Any = None              # a frozen copy of the actor, or None (adapter disabled / the "ref" adapter)
    ref_adapter: str = ""        # "ref": the frozen SFT adapter copy is the reference
    reward: Any = None           # a frozen copy of the reward model, or None (the critic's adapter disabled)
    actor_opt: Any = None        # torch optimizers (None under DeepSpeed: the engine steps)
    critic_opt: Any = None
    actor_sched: Any = None
    critic_sched: Any = None
    deepspeed: bool = False
    device: Any = "cpu"
    ema: dict | None = None      # EMA of the actor's trainable weights (enable_ema)
    offload_ref: bool = False    # keep the frozen copies on the CPU between uses (GPU only)
    offload_reward: bool = False
    synced_gpus: bool = False    # ZeRO-3 over several ranks: every rank runs generate's steps (DS-Chat z3_enabled)
    frozen_engines: list = field(default_factory=list)  # ZeRO-3 inference engines that own ref / reward
    last_rollout: Any = None     # the last valid sampled sequences, scored again when all answers are too short
    notes: list = field(default_factory=list)

    # ------------------------------------------------------------------ the frozen roles
    @contextmanager
    def reference(self):
        """The model to compute reference log-probs with."""
        if self.ref is not None:
            with self._on_device(self.ref, self.offload_ref) as m:
                yield m
            return
        actor = unwrap(self.actor)
        if self.ref_adapter:
            actor.set_adapter(REF_ADAPTER)
            try:
                yield actor
            finally:
                actor.set_adapter("default")  # also makes "default" trainable again (peft's set_adapter)
            return
        with actor.disable_adapter():
            yield actor

    @contextmanager
    def reward_model(self):
        """The model to score answers with (a sequence classifier)."""
        if self.reward is not None:
            with self._on_device(self.reward, self.offload_reward) as m:
                yield m
            return
        critic = unwrap(self.critic)
        with critic.disable_adapter():
            yield critic

    @contextmanager
    def _on_device(self, model, offload: bool):
        if offload and str(self.device) != "cpu":
            model.to(self.device)
            try:
                yield model
            finally:
                model.to("cpu")
        else:
            yield model

    # ------------------------------------------------------------------ training steps
    def backward_step(self, which: str, loss, max_grad_norm: float = 1.0) -> None:
        import torch

        model = self.actor if which == "actor" else self.critic
        if self.deepspeed:
            model.backward(loss)
            model.step()
            return
        opt = self.actor_opt if which == "actor" else self.critic_opt
        sched = self.actor_sched if which == "actor" else self.critic_sched
        loss.backward()
        if max_grad_norm:
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], max_grad_norm)
        opt.step()
        if sched is not None:
            sched.step()
        opt.zero_grad(set_to_none=True)

    def actor_lr(self) -> float:
        opt = self.actor.optimizer if self.deepspeed else self.actor_opt
        return float(opt.param_groups[0]["lr"])

    def update_ema(self, beta: float) -> None:
        import torch

        if self.ema is None:
            return
        params = [(n, p) for n, p in unwrap(self.actor).named_parameters() if n in self.ema]
        with torch.no_grad(), gathered([p for _, p in params]):  # DS-Chat moving_average gathers under ZeRO-3
            for n, p in params:
                self.ema[n].mul_(beta).add_(p.detach().to(self.ema[n].dtype).cpu(), alpha=1.0 - beta)

    # ------------------------------------------------------------------ checkpoints
    def save(self, folder: Path, main: bool) -> None:
        """Trainable weights, optimizer and scheduler states of actor and critic into `folder` (every rank)."""
        import torch

        if self.deepspeed:
            for name, m in (("actor", self.actor), ("critic", self.critic)):
                m.save_checkpoint(str(folder / name), tag="state", exclude_frozen_parameters=True)
        elif main:
            torch.save({"actor": trainable_state(self.actor), "critic": trainable_state(self.critic),
                        "actor_opt": self.actor_opt.state_dict(), "critic_opt": self.critic_opt.state_dict(),
                        "actor_sched": self.actor_sched.state_dict() if self.actor_sched else None,
                        "critic_sched": self.critic_sched.state_dict() if self.critic_sched else None},
                       folder / "ppo_state.pt")
        if main and self.ema is not None:
            torch.save(self.ema, folder / "actor_ema.pt")

    def load(self, folder: Path) -> None:
        import torch

        folder = Path(folder)
        if self.deepspeed:
            for name, m in (("actor", self.actor), ("critic", self.critic)):
                path, _ = m.load_checkpoint(str(folder / name), tag="state", load_module_strict=False)
                if path is None:
                    raise RuntimeError(f"no DeepSpeed {name} state in {folder}")
        else:
            st = torch.load(folder / "ppo_state.pt", map_location="cpu", weights_only=False)
            load_trainable_state(self.actor, st["actor"])
            load_trainable_state(self.critic, st["critic"])
            self.actor_opt.load_state_dict(st["actor_opt"])
            self.critic_opt.load_state_dict(st["critic_opt"])
            if self.actor_sched is not None and st.get("actor_sched"):
                self.actor_sched.load_state_dict(st["actor_sched"])
            if self.critic_sched is not None and st.get("critic_sched"):
                self.critic_sched.load_state_dict(st["critic_sched"])
        if self.ema is not None and (folder / "actor_ema.pt").is_file():
            self.ema = torch.load(folder / "actor_ema.pt", map_location="cpu")

    # ------------------------------------------------------------------ outputs
    def save_actor(self, out: Path, *, ema: bool = False, main: bool = True) -> None:
        """The actor (or its EMA weights) as an adapter or a full HF folder + tokenizer. Call it on every rank
        (ZeRO-3 gathers the weights collectively); rank 0 (`main`) writes."""
        actor = unwrap(self.actor)
        peft = hasattr(actor, "peft_config")
        state = None
        if peft or ema or self.zero3(actor):
            state = gathered_state(actor, trainable_only=peft)
            if ema and self.ema is not None:  # the EMA weights, under every name a tied parameter has
                names: dict[int, list[str]] = {}
                for n, p in actor.named_parameters(remove_duplicate=False):
                    names.setdefault(id(p), []).append(n)
                params = dict(actor.named_parameters())
                for n, t in self.ema.items():
                    for alias in names[id(params[n])]:
                        state[alias] = t.clone()
        if not main:
            return
        out.mkdir(parents=True, exist_ok=True)
        if peft:
            actor.save_pretrained(str(out), selected_adapters=["default"], state_dict=state)
        else:
            actor.config.use_cache = True
            actor.save_pretrained(str(out), state_dict=state)
            actor.config.use_cache = False
        self.tokenizer.save_pretrained(str(out))

    def save_critic(self, out: Path, *, main: bool = True) -> None:
        """The critic (adapter + value head, or the full model) + tokenizer; every rank calls it, `main` writes."""
        critic = unwrap(self.critic)
        peft = hasattr(critic, "peft_config")
        state = gathered_state(critic, trainable_only=peft) if peft or self.zero3(critic) else None
        if not main:
            return
        out.mkdir(parents=True, exist_ok=True)
        critic.save_pretrained(str(out), state_dict=state)
        self.tokenizer.save_pretrained(str(out))

    @staticmethod
    def zero3(model) -> bool:
        return any(hasattr(p, "ds_id") for p in unwrap(model).parameters())


# ------------------------------------------------------------------------------------- building
def _lora(r: int, alpha: int, dropout: float, modules: str, task_type: str):
    pc = modeling.lora_config(r, alpha, dropout, modules, task_type=task_type)
    if task_type == "SEQ_CLS":
        pc.modules_to_save = ["score"]  # the value head: a trainable copy, the RM's own stays frozen
    return pc


def ds_config(base_file: str, *, stage: int, micro_batch: int, lr: float, world: int, precision: str,
              max_grad_norm: float = 1.0) -> dict:
    """A DeepSpeed config for deepspeed.initialize from the job's JSON (whose "auto" values HF would fill)."""
    cfg = json.loads(Path(base_file).read_text(encoding="utf-8")) if base_file else {}
    zero = dict(cfg.get("zero_optimization") or {})
    zero["stage"] = stage
    for k, v in list(zero.items()):
        if v == "auto":
            zero[k] = int(5e8)
    offload = bool((zero.get("offload_optimizer") or {}).get("device", "none") not in ("none", None))
    cfg.update(train_micro_batch_size_per_gpu=micro_batch, gradient_accumulation_steps=1,
               train_batch_size=micro_batch * world, gradient_clipping=max_grad_norm,
               zero_optimization=zero, fp16={**(cfg.get("fp16") or {}), "enabled": precision == "fp16"},
               bf16={"enabled": precision == "bf16"}, steps_per_print=10 ** 9, wall_clock_breakdown=False)
    if (cfg.get("fp16") or {}).get("loss_scale") == "auto":
        cfg["fp16"]["loss_scale"] = 0
    # torch's AdamW without offload (FusedAdam would compile for a minute on a CPU); DeepSpeedCPUAdam with it
    cfg["optimizer"] = {"type": "AdamW", "params": {"lr": lr, "betas": list(BETAS), "eps": 1e-8,
                                                    "weight_decay": 0.0, **({} if offload else {"torch_adam": True})}}
    cfg.pop("scheduler", None)
    return cfg


def ds_eval_config(base_file: str, *, stage: int, micro_batch: int, world: int, precision: str,
                   offload: bool) -> dict:
    """DS-Chat get_eval_ds_config: a frozen model's engine (no optimizer); ZeRO-3 partitions its weights, offload
    keeps them in CPU memory."""
    cfg = ds_config(base_file, stage=stage, micro_batch=micro_batch, lr=0.0, world=world, precision=precision)
    for k in ("optimizer", "scheduler", "gradient_clipping"):
        cfg.pop(k, None)
    zero = {"stage": stage, "stage3_param_persistence_threshold": 1e4}
    if offload:
        zero["offload_param"] = {"device": "cpu"}
    cfg["zero_optimization"] = zero
    return cfg


def zero_offload(ds_file: str) -> bool:
    try:
        zero = json.loads(Path(ds_file).read_text(encoding="utf-8")).get("zero_optimization") or {}
    except (OSError, ValueError):
        return False
    return any((zero.get(k) or {}).get("device", "none") not in ("none", None)
               for k in ("offload_optimizer", "offload_param"))


def build(cfg: Any, r: Any, *, total_iters: int, log=print) -> RLHFEngine:
    """Load the models as `cfg` (PPOArgs) says and `r` (the resolved paths) names; optimizers and schedulers
    (``deepspeed.initialize`` per trained model when the job has a DeepSpeed config)."""
    import torch
    from transformers import AutoModelForSequenceClassification, get_scheduler

    from backends.common import distributed as dist

    dtype = cfg.precision if (cfg.precision != "fp32" and (r.job.deepspeed or cfg.actor_lora_dim)) else "fp32"
    device = torch.device("cuda", int(__import__("os").environ.get("LOCAL_RANK", 0))) if dist.has_cuda() \
        else torch.device("cpu")
    tok = modeling.load_tokenizer(r.actor_adapter or r.actor_model)
    tok.padding_side = "left"

    # ---- actor and reference
    actor = modeling.load_causal_lm(r.actor_model, dtype=dtype)
    ref = None
    ref_adapter = ""
    if cfg.actor_lora_dim > 0:
        from peft import PeftModel, get_peft_model

        if r.actor_adapter:  # keep training the SFT adapter; its frozen copy is the reference
            actor = PeftModel.from_pretrained(actor, r.actor_adapter, is_trainable=True)
            actor.load_adapter(r.actor_adapter, adapter_name=REF_ADAPTER, is_trainable=False)
            actor.set_adapter("default")
            ref_adapter = REF_ADAPTER
            log(f"actor: {r.actor_model} + the SFT adapter {Path(r.actor_adapter).name} (trained on); "
                "reference: its frozen copy (one base model)")
        else:
            actor = get_peft_model(actor, _lora(cfg.actor_lora_dim, cfg.lora_alpha, cfg.lora_dropout,
                                                cfg.lora_target_modules, "CAUSAL_LM"))
            log(f"actor: {r.actor_model} + LoRA r={cfg.actor_lora_dim}; reference: the adapter disabled "
                "(one base model)")
    else:
        if r.actor_adapter:
            from peft import PeftModel

            actor = PeftModel.from_pretrained(actor, r.actor_adapter).merge_and_unload()
        ref = copy.deepcopy(actor).requires_grad_(False).eval()
        log(f"actor: {r.actor_model} (full); reference: a frozen copy")
    # ---- critic and reward model
    rm = AutoModelForSequenceClassification.from_pretrained(r.reward_model, num_labels=1,
                                                            dtype=modeling.torch_dtype(dtype))
    rm.config.pad_token_id = tok.pad_token_id
    reward = None
    if cfg.critic_lora_dim > 0:
        from peft import get_peft_model

        critic = get_peft_model(rm, _lora(cfg.critic_lora_dim, cfg.lora_alpha, cfg.lora_dropout,
                                          cfg.lora_target_modules, "SEQ_CLS"))
        log(f"critic: the reward model + LoRA r={cfg.critic_lora_dim} + its own value head; reward "
            "model: the same weights with the adapter disabled (one base model)")
    else:
        critic = rm
        reward = copy.deepcopy(rm).requires_grad_(False).eval()
        log("critic: the reward model (full); reward model: a frozen copy")
    for m in (actor, critic, ref, reward):
        if m is not None:
            disable_dropout(m)
    if cfg.actor_gradient_checkpointing:
        actor.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if cfg.critic_gradient_checkpointing:
        critic.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    z3_actor = bool(r.job.deepspeed) and r.actor_zero_stage == 3
    z3_critic = bool(r.job.deepspeed) and r.critic_zero_stage == 3
    # under ZeRO-3 the frozen copies are partitioned by DeepSpeed (and offloaded by it: offload_param)
    offload_ref = cfg.offload_reference_model and device.type != "cpu" and not z3_actor
    offload_reward = cfg.offload_reward_model and device.type != "cpu" and not z3_critic
    for m, off in ((ref, offload_ref), (reward, offload_reward)):
        if m is not None and not off:
            m.to(device)
    actor.to(device)
    critic.to(device)

    eng = RLHFEngine(tok, actor, critic, ref=ref, ref_adapter=ref_adapter, reward=reward, device=device,
                     offload_ref=offload_ref, offload_reward=offload_reward)
    actor_lr = cfg.actor_lora_learning_rate if cfg.actor_lora_dim > 0 else cfg.actor_learning_rate
    critic_lr = cfg.critic_lora_learning_rate if cfg.critic_lora_dim > 0 else cfg.critic_learning_rate
    if cfg.unsupervised_dataset:
        total_actor = total_iters * 2
    else:
        total_actor = total_iters

    def sched(opt, n):
        return get_scheduler(cfg.lr_scheduler_type, optimizer=opt, num_warmup_steps=cfg.num_warmup_steps,
                             num_training_steps=max(1, n))

    if r.job.deepspeed:
        import deepspeed

        for name, model, lr, stage, n in (("actor", actor, actor_lr, r.actor_zero_stage, total_actor),
                                          ("critic", critic, critic_lr, r.critic_zero_stage, total_iters)):
            conf = ds_config(r.job.deepspeed, stage=stage, micro_batch=cfg.per_device_training_batch_size, lr=lr,
                             world=dist.world_size(), precision=cfg.precision)
            engine, _opt, _, _ = deepspeed.initialize(
                model=model, model_parameters=[p for p in model.parameters() if p.requires_grad], config=conf,
                lr_scheduler=lambda opt, n=n: sched(opt, n))
            setattr(eng, name, engine)
        # DS-Chat rlhf_engine: a frozen copy gets an inference engine with ZeRO-3 when its trained model has it
        for name, z3, offload in (("ref", z3_actor, cfg.offload_reference_model),
                                  ("reward", z3_critic, cfg.offload_reward_model)):
            frozen = getattr(eng, name)
            if frozen is None or not z3:
                continue
            conf = ds_eval_config(r.job.deepspeed, stage=3, micro_batch=cfg.per_device_training_batch_size,
                                  world=dist.world_size(), precision=cfg.precision, offload=offload)
            engine, *_ = deepspeed.initialize(model=frozen, config=conf)
            eng.frozen_engines.append(engine)
            setattr(eng, name, engine.module)
        eng.deepspeed = True
        eng.synced_gpus = z3_actor and dist.world_size() > 1
        log(f"DeepSpeed: actor ZeRO-{r.actor_zero_stage}, critic ZeRO-{r.critic_zero_stage}, "
            f"{dist.world_size()} process(es)" + (", generation synced across ranks (ZeRO-3)" if eng.synced_gpus
                                                  else ""))
    else:
        eng.actor_opt = torch.optim.AdamW([p for p in actor.parameters() if p.requires_grad], lr=actor_lr,
                                          betas=BETAS, eps=1e-8, weight_decay=0.0)
        eng.critic_opt = torch.optim.AdamW([p for p in critic.parameters() if p.requires_grad], lr=critic_lr,
                                           betas=BETAS, eps=1e-8, weight_decay=0.0)
        eng.actor_sched, eng.critic_sched = sched(eng.actor_opt, total_actor), sched(eng.critic_opt, total_iters)
    if cfg.enable_ema:
        eng.ema = gathered_state(eng.actor, trainable_only=True)
    return eng
