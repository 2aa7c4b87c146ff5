"""Streamlit glue shared by the pages. Only ui/cached.py uses st.cache_*; ui/charts/ makes no st calls."""
