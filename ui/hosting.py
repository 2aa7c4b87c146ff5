"""The host's settings in the app (:mod:`core.hosting`): read once per server from the environment and the
``[layerscope]`` table of ``.streamlit/secrets.toml``; helpers that switch widgets off when hosted."""

from __future__ import annotations

import logging
import os
from typing import Any

import streamlit as st

from core.hosting import SECRETS_TABLE, HostSettings, settings

log = logging.getLogger(__name__)

OFF_HOSTED = "Off on this hosted server: visitors use only the bundled model, its data and the models the host listed."


def _secrets_table() -> dict[str, Any]:
    try:
        table = st.secrets.get(SECRETS_TABLE)
    except Exception:  # noqa: BLE001 - no secrets.toml (the usual local case) or one Streamlit cannot read
        return {}
    return dict(table) if table else {}


@st.cache_resource(show_spinner=False)
def _host() -> tuple[HostSettings, str]:
    try:
        return settings(os.environ, _secrets_table()), ""
    except ValueError as err:
        # A setting that cannot be read: hosted with the defaults (never silently open), said on every page.
        log.error("hosted-mode settings: %s", err)
        return HostSettings(hosted=True), f"{err} The server runs hosted with the default limits until it is fixed."


def host() -> HostSettings:
    """This server's settings (local mode unless the host turned hosted mode on)."""
    return _host()[0]


def settings_problem() -> str:
    """Why the host's settings could not be read ('' when they could)."""
    return _host()[1]


def hosted() -> bool:
    return host().hosted


def uploads(options: list) -> list:
    """``options`` that read a visitor's files (an upload choice): none on a hosted server."""
    return [] if hosted() else list(options)


def cap(limit: int | None) -> int | None:
    """A sample-size widget's upper bound (``limit`` locally; at most the host's ``max_samples`` hosted)."""
    return host().cap(limit)
