"""Hosted mode's settings (core/hosting.py): read from the environment and the ``[layerscope]`` table of
secrets.toml (the environment wins), refused with the setting's name when unreadable, and the rules they give:
which models a visitor may open and how sample sizes are capped. Local mode (the default) changes nothing."""

from __future__ import annotations

import pytest

from core.hosting import DEFAULT_MAX_SAMPLES, HostSettings, settings


def test_the_default_is_local_and_open() -> None:
    host = settings({}, {})
    assert not host.hosted and host.models == ()
    assert host.model_allowed("/any/folder") and host.model_allowed("gpt2")
    assert host.cap(3000) == 3000 and host.cap(None) is None
    assert host.max_jobs >= 1
    host.check_model("/etc")  # no refusal locally


def test_environment_turns_hosting_on_and_wins_over_secrets() -> None:
    secrets = {"hosted": True, "models": ["gpt2", "EleutherAI/pythia-160m"], "max_samples": 50, "max_jobs": 3}
    host = settings({"LAYERSCOPE_MAX_SAMPLES": "20", "LAYERSCOPE_JOB_MAX_MB": "64"}, secrets)
    assert host.hosted and host.models == ("gpt2", "EleutherAI/pythia-160m")
    assert host.max_samples == 20 and host.max_jobs == 3 and host.job_max_mb == 64.0
    assert settings({"LAYERSCOPE_HOSTED": "0"}, secrets).hosted is False
    listed = settings({"LAYERSCOPE_HOSTED": "yes", "LAYERSCOPE_MODELS": " gpt2 ,, gpt2,x/y "}, {})
    assert listed.models == ("gpt2", "x/y")


def test_hosted_rules_allow_only_listed_models_and_cap_samples() -> None:
    host = HostSettings(hosted=True, models=("gpt2",), max_samples=100)
    assert host.model_allowed("bundled") and host.model_allowed("gpt2")
    for source in ("/etc", "./my-checkpoint", "EleutherAI/pythia-160m", "/tmp/model.gguf", "NDIF: gpt2"):
        assert not host.model_allowed(source)
        with pytest.raises(ValueError, match="only the bundled model and the models its host listed"):
            host.check_model(source)
    assert host.cap(3000) == 100 and host.cap(50) == 50 and host.cap(None) == 100
    assert "sample sizes at most 100" in host.describe() and "gpt2" in host.describe()
    assert HostSettings(hosted=True).max_samples == DEFAULT_MAX_SAMPLES


@pytest.mark.parametrize("environ, words", [
    ({"LAYERSCOPE_HOSTED": "maybe"}, ["LAYERSCOPE_HOSTED", "true or false"]),
    ({"LAYERSCOPE_MAX_SAMPLES": "-3"}, ["LAYERSCOPE_MAX_SAMPLES", "at least 1"]),
    ({"LAYERSCOPE_MAX_SAMPLES": "many"}, ["LAYERSCOPE_MAX_SAMPLES", "number"]),
    ({"LAYERSCOPE_MAX_JOBS": "0"}, ["LAYERSCOPE_MAX_JOBS"]),
    ({"LAYERSCOPE_JOB_MAX_AGE_S": "inf"}, ["LAYERSCOPE_JOB_MAX_AGE_S", "finite"]),
    ({"LAYERSCOPE_MAX_JOBS": "1e400"}, ["LAYERSCOPE_MAX_JOBS"]),
])
def test_an_unreadable_setting_is_refused_by_name(environ: dict, words: list[str]) -> None:
    with pytest.raises(ValueError) as err:
        settings(environ, {})
    for word in words:
        assert word in str(err.value)


def test_an_unreadable_secrets_value_names_the_file() -> None:
    with pytest.raises(ValueError, match="layerscope.max_samples in secrets.toml"):
        settings({}, {"max_samples": "lots"})
