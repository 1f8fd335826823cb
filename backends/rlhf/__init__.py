"""RLHF step 3 (DeepSpeed-Chat): PPO with actor, critic, reference and reward model.

- :mod:`backends.rlhf.ppo` -- the schema, validation and the PPO loop (``python -m backends.rlhf.ppo``);
- :mod:`backends.rlhf.losses` -- DS-Chat's rewards, GAE and clipped losses as pure tensor functions;
- :mod:`backends.rlhf.engine` -- the models (two copies of base weights with LoRA), their optimizers, and the
  reward-model scoring of prompt + answer texts shared with the other RLHF recipes.
"""
