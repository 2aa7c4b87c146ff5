"""The page frame every page runs in: page config, the shared sidebar, the title, and the URL written on every exit.

    with page("Top-k order", ":material/format_list_numbered:", topk_view.URL_KEYS, caption="...") as selection:
        ...  # the page's views; ``stop_page("why")`` ends the page early, the URL is written all the same

The URL keeps the model and prompt plus the page's own ``url_keys``, whether the body finishes, stops early
(``stop_page``) or fails, so a copied link always reopens the view the researcher saw. Bodies end early with
``stop_page``, never ``st.stop``: once a stop is requested Streamlit refuses every further message, the URL update
included, so the frame writes the URL first and only then calls ``st.stop`` itself (a model that failed to load).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, NoReturn, Sequence

import streamlit as st

from core.model.remote import api_key_scope
from ui.downloads import set_context
from ui.sidebar import Selection, ndif_key, sidebar
from ui.state import write_url

SHARED_KEYS: tuple[str, ...] = ("model", "prompt", "chat")


REMOTE_NOTE = ("This page needs the model's weights and residual stream on this machine, so it does not run on NDIF "
               "yet. With a model on NDIF, use the Lens page (the logit lens, computed next to the model) or the "
               "Home page; untick \"Run on NDIF\" in the sidebar to run a model here.")


class StopPage(Exception):
    """Raised by :func:`stop_page`: the rest of the page body is skipped, the frame still writes the URL."""


def stop_page(message: str | None = None, kind: str = "error") -> NoReturn:
    """End the page here, showing ``message`` (as st.error, st.warning or st.info) if given."""
    if message:
        getattr(st, kind)(message)
    raise StopPage(message or "")


@contextmanager
def page(title: str, icon: str, url_keys: Sequence[str] = (), *, heading: str | None = None,
         caption: str = "", require_model: bool = True, remote_ok: bool = False) -> Iterator[Selection | None]:
    """Frame one page: config, sidebar, title (``heading`` or ``title``) and caption, then the body.

    Yields the sidebar's selection. With ``require_model`` (the default) a model that failed to load ends the page
    after the sidebar has said why; without it the body gets ``None`` and decides (the Home page shows its links).
    A model that runs on NDIF ends a page that does not run there (``remote_ok`` False) with a note saying where it
    does; the body's NDIF requests use the key this browser session typed (else the server's NDIF_API_KEY).
    """
    st.set_page_config(page_title=title if title == "Layerscope" else f"{title} · Layerscope", page_icon=icon,
                       layout="wide")
    keys = [*SHARED_KEYS, *(k for k in url_keys if k not in SHARED_KEYS)]
    try:
        selection = sidebar()
        set_context(title, st.session_state.get("ls_model", ""))
        st.title(heading or title)
        if caption:
            st.caption(caption)
        if selection is None and require_model:
            write_url(keys)  # now: after st.stop the URL can no longer be written
            st.stop()  # before the body: a context manager cannot skip its body, st.stop ends the script
        if getattr(getattr(selection, "session", None), "remote", False) and not remote_ok:
            st.info(REMOTE_NOTE)
            write_url(keys)
            st.stop()
        with api_key_scope(ndif_key()):
            yield selection
    except StopPage:
        pass
    finally:
        write_url(keys)
