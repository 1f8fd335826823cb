"""Inference for the A/B compare tab: chat (base vs fine-tuned)."""
