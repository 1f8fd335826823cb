"""The PPO arithmetic of DeepSpeed-Chat step 3 (``dschat/rlhf/ppo_trainer.py``), as pure tensor functions.

Shapes: a batch of B sequences ``seq = [prompt (left-padded to P tokens) | answer]`` of length S. Per-token
tensors over the *predicted* positions have length S-1 (``logprobs[:, t]`` is the log-probability of
``seq[:, t+1]``), so the answer starts at ``start = P - 1`` and ``action_mask = attention_mask[:, 1:]``.
Every function takes the same masks DS-Chat builds; nothing here loads a model.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def gather_log_probs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log p(label) per position: logits [B, T, V], labels [B, T] -> [B, T] (DS-Chat gather_log_probs)."""
    return F.log_softmax(logits.float(), dim=-1).gather(dim=-1, index=labels.unsqueeze(-1)).squeeze(-1)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of x over the positions where mask is 1 (all of x's dims)."""
    mask = mask.to(x.dtype)
    return (x * mask).sum() / mask.sum().clamp(min=1)


def answer_ends(action_mask: torch.Tensor, start: int) -> torch.Tensor:
    """Per row, one past the last answer position of the per-token tensors (DS-Chat's ``ends``)."""
    return start + action_mask[:, start:].sum(1).long()


def compute_rewards(log_probs: torch.Tensor, ref_log_probs: torch.Tensor, reward_score: torch.Tensor,
                    action_mask: torch.Tensor, start: int, *, kl_ctl: float = 0.1,
                    clip_reward_value: float = 5.0) -> torch.Tensor:
    """Per-token rewards: ``-kl_ctl * (logp - ref_logp)`` everywhere, plus the reward model's score clipped to
    ±clip_reward_value on the last answer token (DS-Chat compute_rewards). [B, S-1]; zero after the answer end
    (DS-Chat zeroes ``old_rewards[i, ends[i]:]`` in train_rlhf)."""
    rewards = -kl_ctl * (log_probs - ref_log_probs)
    ends = answer_ends(action_mask, start)
    clipped = torch.clamp(reward_score, -clip_reward_value, clip_reward_value).to(rewards.dtype)
    rows = torch.arange(rewards.shape[0], device=rewards.device)
    last = (ends - 1).clamp(min=start)
    rewards[rows, last] += clipped
    positions = torch.arange(rewards.shape[1], device=rewards.device).unsqueeze(0)
    return rewards.masked_fill(positions >= ends.unsqueeze(1), 0.0)


def advantages_and_returns(values: torch.Tensor, rewards: torch.Tensor, start: int, *, gamma: float = 1.0,
                           lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE over the answer positions t >= start (DS-Chat get_advantages_and_returns, after trlx):
    ``delta_t = r_t + gamma * V_{t+1} - V_t``, ``A_t = delta_t + gamma * lam * A_{t+1}``, returns = A + V.
    `values` must be zero after each answer's end (see :func:`zero_after_end`). -> ([B, S-1-start] x 2)"""
    lastgaelam = torch.zeros_like(values[:, 0])
    reversed_adv = []
    length = rewards.shape[-1]
    for t in reversed(range(start, length)):
        nextvalues = values[:, t + 1] if t < length - 1 else torch.zeros_like(values[:, t])
        delta = rewards[:, t] + gamma * nextvalues - values[:, t]
        lastgaelam = delta + gamma * lam * lastgaelam
        reversed_adv.append(lastgaelam)
    advantages = torch.stack(reversed_adv[::-1], dim=1)
    returns = advantages + values[:, start:]
    return advantages.detach(), returns.detach()


def zero_after_end(x: torch.Tensor, action_mask: torch.Tensor, start: int) -> torch.Tensor:
    """x with every position at or after the answer's end set to 0 (DS-Chat: old_values[i, ends[i]:] = 0)."""
    ends = answer_ends(action_mask, start)
    positions = torch.arange(x.shape[1], device=x.device).unsqueeze(0)
    return x.masked_fill(positions >= ends.unsqueeze(1), 0.0)


def actor_loss_fn(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                  mask: torch.Tensor, *, cliprange: float = 0.2) -> torch.Tensor:
    """PPO's clipped policy loss (DS-Chat actor_loss_fn): mean over the mask of
    ``max(-A * ratio, -A * clip(ratio, 1 - eps, 1 + eps))`` with ``ratio = exp((logp - old_logp) * mask)``."""
    mask = mask.to(logprobs.dtype)
    ratio = torch.exp((logprobs - old_logprobs) * mask)
    pg1 = -advantages * ratio
    pg2 = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    return torch.sum(torch.max(pg1, pg2) * mask) / mask.sum().clamp(min=1)


def critic_loss_fn(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
                   *, cliprange_value: float = 0.2) -> torch.Tensor:
    """PPO's clipped value loss (DS-Chat critic_loss_fn): ``0.5 * mean over the mask of max((V - R)^2,
    (clip(V, V_old - eps, V_old + eps) - R)^2)``, in fp32."""
    mask = mask.to(torch.float32)
    values, old_values, returns = values.float(), old_values.float(), returns.float()
    clipped = torch.clamp(values, old_values - cliprange_value, old_values + cliprange_value)
    loss = torch.max((values - returns) ** 2, (clipped - returns) ** 2)
    return 0.5 * torch.sum(loss * mask) / mask.sum().clamp(min=1)


def approx_kl(log_probs: torch.Tensor, ref_log_probs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean per-token ``logp - ref_logp`` over the answer tokens: the KL-to-reference estimate the penalty uses."""
    return masked_mean(log_probs - ref_log_probs, mask)


class ExponentialMovingAverage:
    """DS-Chat's reward EMA (``dschat/utils/utils.py``): ema = alpha * ema + (1 - alpha) * x, alpha 0.9."""

    def __init__(self, alpha: float = 0.9, value: float | None = None):
        self.alpha, self.ema = alpha, value

    def update(self, x: float) -> float:
        prev = x if self.ema is None else self.ema
        self.ema = self.alpha * prev + (1.0 - self.alpha) * x
        return self.ema

    def get(self) -> float:
        return self.ema if self.ema is not None else 0.0


@torch.no_grad()
def moving_average(model: torch.nn.Module, model_ema: torch.nn.Module, beta: float = 0.992) -> None:
    """EMA of the actor's weights (DS-Chat moving_average): ema = beta * ema + (1 - beta) * param, by name."""
    ema = dict(model_ema.named_parameters())
    for name, p in model.named_parameters():
        if name in ema:
            e = ema[name]
            e.data.copy_(beta * e.data + (1.0 - beta) * p.data.to(e.dtype))
