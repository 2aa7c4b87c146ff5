"""Altair chart builders, one module per analysis: each takes a tidy frame, returns a chart, makes no Streamlit call."""
