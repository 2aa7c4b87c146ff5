"""Neuron topics (Lim & Lauw, EMNLP 2023)."""
