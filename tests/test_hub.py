"""Weights that are neither local, cached nor downloadable fail within seconds, saying what to do."""

from __future__ import annotations

import socket
import time

import pytest
from notellm2_pl_backbones.hf_llm import HFCausalLM
from notellm2_pl_backbones.hf_vision import SiglipVision

from notellm2_pl.plugins.hub import WeightsUnavailable, ensure_available


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


@pytest.mark.parametrize("build, flag", [
    (lambda: HFCausalLM("acme/uncached-llm"), "--model.llm.init_args.pretrained"),
    (lambda: SiglipVision("acme/uncached-tower"), "--model.vision.init_args.pretrained"),
])
def test_offline_uncached_hub_id_fails_fast_with_both_ways_out(empty_cache, monkeypatch, build, flag):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(WeightsUnavailable) as err:
        build()
    assert time.monotonic() - start < 5
    msg = str(err.value)
    assert "acme/uncached-" in msg and "offline mode is on (HF_HUB_OFFLINE" in msg
    assert "huggingface-cli download acme/uncached-" in msg and flag in msg


def test_unreachable_hub_fails_within_the_probe_timeout(empty_cache, monkeypatch):
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    start = time.monotonic()
    with pytest.raises(WeightsUnavailable, match="is unreachable"):
        ensure_available("acme/uncached-llm", "--model.llm.init_args.pretrained", timeout=2.0)
    assert time.monotonic() - start < 5


def test_local_paths_and_cached_ids_pass(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ensure_available(str(tmp_path), "--x")  # a local directory: the loader takes it from here
    snapshot = tmp_path / "hub" / "models--acme--cached" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (tmp_path / "hub" / "models--acme--cached" / "refs").mkdir()
    (tmp_path / "hub" / "models--acme--cached" / "refs" / "main").write_text("abc")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    ensure_available("acme/cached", "--x")
