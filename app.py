"""Layerscope: ``streamlit run app.py``. The page menu (titles, icons, order), then the chosen page.

Each page is a plain script under app_pages/ (runnable alone too, e.g. by ``AppTest.from_file``); the home page is
app_pages/0_Home.py. Not pages/: Streamlit discovers a folder of that name on its own, and when a fresh server's first
request was a deep link it served that list instead of this menu to every later visitor. URL paths are inferred from the file names as in a classic multipage app: "/", "/Lens", ...
"""

import os

# Before torch loads (the pages import it): OpenMP threads that wait for work sleep instead of spinning. A server
# shares its cores with other sessions' work (and, on a laptop, with the browser drawing the page); spinning threads
# then burn those cores: a fresh 20-token Lens prompt cost the server 2.6 CPU s with the default policy and 1.7 with
# this one, its page 3.9 s against 3.4 (bench/load.py's sessions, 2 AMD cores). A value the user set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import streamlit as st  # noqa: E402

from ui.menu import ANALYSES, HOME  # noqa: E402

pages = [st.Page(HOME[0], title=HOME[1], icon=HOME[2], default=True)]
pages += [st.Page(path, title=title, icon=icon) for path, title, icon, _blurb in ANALYSES]
st.navigation(pages).run()
