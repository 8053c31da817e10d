"""Autoregressive generators over vtok tokens: a LlamaGen-style GPT, its sampler and its training."""

from vtok.ar_models import gpt  # noqa: F401  (registration)
