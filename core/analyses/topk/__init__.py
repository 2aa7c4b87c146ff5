"""Top-k order ("Looking Beyond the Top-1", Lioubashevski et al.)."""
