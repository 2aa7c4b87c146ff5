"""Widget layouts of the pages, one module per analysis (Streamlit calls; charts come from ui/charts/)."""
