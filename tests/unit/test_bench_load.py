"""bench/load.py's arithmetic: the CPU list parser and how long n sessions' work takes on the cores."""

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def load():
    spec = importlib.util.spec_from_file_location("bench_load", ROOT / "bench" / "load.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_load"] = module  # dataclasses look their module up while the class is made
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("bench_load", None)


def test_parse_cpus(load):
    assert load.parse_cpus("0,1") == {0, 1}
    assert load.parse_cpus("0-3") == {0, 1, 2, 3}
    assert load.parse_cpus("0-1, 4") == {0, 1, 4}
    for bad in ("", "a", "1-", "-1", "0,,1"):
        with pytest.raises(ValueError):
            load.parse_cpus(bad)


def _phase(load, runs: int, server: float, browser: float):
    return load.Phase("single", [load.Run(1.0, "csv")] * runs, wall=10.0,
                      cpu={"server": server, "browser": browser, "other": 0.0}, peak_rss=0)


def test_work_time_shared_cores(load):
    # 4 single sessions used 6 s of server and 18 s of browser CPU: 1.5 + 4.5 = 6 CPU s a session;
    # 8 of them on 2 shared cores need at least 8 * 6 / 2 = 24 s
    single = _phase(load, 4, server=6.0, browser=18.0)
    assert load.work_time(single, 8, server_cores=2, browser_cores=None) == pytest.approx(24.0)
    assert load.work_time(single, 1, server_cores=2, browser_cores=None) == pytest.approx(3.0)


def test_work_time_separate_cores(load):
    # the server's 1.5 CPU s a session on its 2 cores (6 s for 8) against the browsers' 4.5 on 14 (about 2.6 s):
    # the slower side bounds it
    single = _phase(load, 4, server=6.0, browser=18.0)
    assert load.work_time(single, 8, server_cores=2, browser_cores=14) == pytest.approx(6.0)
    assert load.work_time(single, 8, server_cores=2, browser_cores=2) == pytest.approx(18.0)
