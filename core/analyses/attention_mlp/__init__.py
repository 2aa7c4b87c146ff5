"""Attention -> MLP (Neo, Cohen & Barez 2024): next-token neurons and the heads that switch them on."""
