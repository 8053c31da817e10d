"""Autoregressive generators over vtok tokens (none registered yet)."""
