"""Page state that lives in the URL, so a copied link reopens the same view.

Values are kept in ``st.session_state`` under ``ls_<name>`` (not widget keys, which Streamlit drops when
a page stops rendering the widget) and mirrored into ``st.query_params`` after every run.
"""

from __future__ import annotations

from typing import Any, Callable

import streamlit as st

from core.validate import one_line

_PREFIX = "ls_"


def _state_key(name: str) -> str:
    return _PREFIX + name


def url_value(name: str, default: Any, parse: Callable[[str], Any] = str) -> Any:
    """The current value of ``name``: session state, else the URL (parsed), else ``default``."""
    key = _state_key(name)
    if key not in st.session_state:
        raw = st.query_params.get(name)
        value = default
        if raw is not None:
            try:
                value = parse(raw)
            except (TypeError, ValueError):
                st.toast(f"Ignored the URL parameter {name}={shown(raw)!r}: not a valid value.")
        st.session_state[key] = value
    return st.session_state[key]


def url_list(name: str, default: list[str]) -> list[str]:
    """Like :func:`url_value` for repeated parameters (``?target=a&target=b``)."""
    key = _state_key(name)
    if key not in st.session_state:
        values = st.query_params.get_all(name)
        st.session_state[key] = list(values) if values else list(default)
    return st.session_state[key]


def set_value(name: str, value: Any) -> None:
    """Store ``value`` as the current value of ``name`` (written to the URL at the end of the run)."""
    st.session_state[_state_key(name)] = value


def bound(widget_fn: Callable[..., Any], name: str, default: Any, *args: Any,
          parse: Callable[[str], Any] = str, samples: bool = False, **kwargs: Any) -> Any:
    """Render ``widget_fn(*args, key="w_<name>", **kwargs)`` with its value bound to the URL.

    The widget starts from the URL-bound value and writes its value back after every run. A number outside the
    widget's ``min_value``/``max_value`` (a link's ``n=-5``) is brought inside them, with a toast. ``samples``:
    the value is a sample size, capped by a hosted server's ``max_samples`` (:mod:`ui.hosting`).
    """
    wkey = "w_" + name
    value = url_value(name, default, parse)
    options = kwargs.get("options", args[1] if len(args) > 1 else None)
    if options is not None and value not in list(options):
        value = default
    if samples:
        from ui.hosting import cap, hosted

        kwargs["max_value"] = cap(kwargs.get("max_value"))
        if hosted() and kwargs.get("help"):
            kwargs["help"] += f" At most {kwargs['max_value']:,} on this hosted server."
    value = inside(name, value, kwargs.get("min_value"), kwargs.get("max_value"))
    # Re-assigned on every run, a change copied back by on_change before the rerun: a widget that a run did not draw
    # (a page stopped early, e.g. by a model that failed to load) comes back showing the value in use, never the
    # browser's leftover default (seen as top-k 1 / stride 1 after a failed load while the URL still said 5 / 2).
    st.session_state[wkey] = value
    result = widget_fn(*args, key=wkey, on_change=lambda: set_value(name, st.session_state[wkey]), **kwargs)
    set_value(name, result)
    return result


def inside(name: str, value: Any, low: Any, high: Any) -> Any:
    """``value`` clamped to [low, high] (either may be None), with a toast saying so; non-numbers pass through."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    clamped = value
    if high is not None and (clamped > high or clamped != clamped):
        clamped = high
    if low is not None and (clamped < low or clamped != clamped):
        clamped = low
    if clamped != value:
        st.toast(f"{name} = {shown(value)} is outside {low}..{high}: using {clamped}.")
        set_value(name, clamped)
    return clamped


def shown(value: Any, limit: int = 60) -> str:
    """``value`` as a message quotes it (:func:`core.validate.one_line`): one line, controls escaped, at most about
    ``limit`` characters (a 10,000-character link value is not echoed whole)."""
    return one_line(str(value), limit)


def url_flag(name: str) -> bool:
    """A view's "show the submitted request" flag: "1" after its button was pressed, "0" while it waits. Any other
    value (a hand-edited link) is reset to "0", with a toast."""
    value = url_value(name, "0")
    if value not in ("0", "1"):
        st.toast(f"Ignored the URL parameter {name}={shown(value)!r}: it is 0 or 1 (press the view's button).")
        set_value(name, "0")
        value = "0"
    return value == "1"


def url_choice(name: str, default: str, options: list[str]) -> str:
    """:func:`url_value` limited to ``options``: another value (a hand-edited link) becomes ``default``, with a
    toast."""
    value = url_value(name, default)
    if value not in options:
        st.toast(f"Ignored the URL parameter {name}={shown(value)!r}: choose from {', '.join(options)}.")
        set_value(name, default)
        value = default
    return value


def persistent(widget_fn: Callable[..., Any], name: str, default: Any, *args: Any, **kwargs: Any) -> Any:
    """Render a widget that every page shows (the sidebar's) so that it keeps its value across pages.

    Streamlit treats a keyed widget on another page as a new widget and may show it empty, so the value lives
    under ``ls_<name>`` (initialised from the URL), is re-assigned to the widget before each render and is
    written back by ``on_change`` before the rerun that follows a change.
    """
    wkey = "w_" + name
    st.session_state[wkey] = url_value(name, default)
    return widget_fn(*args, key=wkey, on_change=lambda: set_value(name, st.session_state[wkey]), **kwargs)


def write_url(names: list[str]) -> None:
    """Mirror the named values into the URL (lists become repeated parameters; None/"" are dropped)."""
    params: dict[str, Any] = {}
    for name in names:
        value = st.session_state.get(_state_key(name))
        if value is None or value == "" or value == []:
            continue
        params[name] = [str(v) for v in value] if isinstance(value, list) else str(value)
    current = {k: st.query_params.get_all(k) for k in st.query_params}
    wanted = {k: v if isinstance(v, list) else [v] for k, v in params.items()}
    if current != wanted:
        st.query_params.from_dict(params)


def shared_params() -> dict[str, str]:
    """The URL parameters every page shares (model, prompt, chat wrapping), for page links."""
    out = {}
    for name in ("model", "prompt", "chat"):
        value = st.session_state.get(_state_key(name))
        if value:
            out[name] = str(value)
    return out
