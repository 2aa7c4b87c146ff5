"""The command line (``python -m core``): one module per analysis, each with ``register(subparsers)``."""
