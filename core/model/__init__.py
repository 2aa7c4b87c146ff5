"""The model layer: specs and loading, the architecture table, the session (one forward pass, captured)."""
