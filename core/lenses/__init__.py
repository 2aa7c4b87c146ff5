"""Lenses: how a residual state is read out as a next-token distribution (logit, patchscope, learned), the
registry that builds them by name (core.lenses.registry), and the chunked statistics over the vocabulary."""
