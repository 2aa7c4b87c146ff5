"""Lenses: how a residual state is read out as a next-token distribution, and the chunked statistics over the vocabulary."""
