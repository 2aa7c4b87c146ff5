"""How Do LLMs Use Their Depth? (Gupta et al.): guess-then-refine at the last prompt position."""
