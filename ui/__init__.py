"""Streamlit glue shared by the pages. Only ui/cached.py uses st.cache_*; charts.py makes no st calls."""
