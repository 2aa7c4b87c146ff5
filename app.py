"""Layerscope: ``streamlit run app.py``. The page menu (titles, icons, order), then the chosen page.

Each page is a plain script under app_pages/ (runnable alone too, e.g. by ``AppTest.from_file``); the home page is
app_pages/0_Home.py. Not pages/: Streamlit discovers a folder of that name on its own, and when a fresh server's first
request was a deep link it served that list instead of this menu to every later visitor. URL paths are inferred from the file names as in a classic multipage app: "/", "/Lens", ...
"""

import streamlit as st

from ui.menu import ANALYSES, HOME

pages = [st.Page(HOME[0], title=HOME[1], icon=HOME[2], default=True)]
pages += [st.Page(path, title=title, icon=icon) for path, title, icon, _blurb in ANALYSES]
st.navigation(pages).run()
