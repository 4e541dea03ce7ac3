"""The modality check fires when a probe beats the full note beyond noise, and stays silent otherwise."""

from __future__ import annotations

import math

from notellm2_pl.analysis.modality_check import difference_noise, format_modality_check, modality_check


def test_fires_on_an_image_drowned_model():
    recalls = {"full": {"all": 0.14, "longquery": 0.09}, "only_text": {"all": 0.19, "longquery": 0.16},
               "only_image": {"all": 0.04, "longquery": 0.03}}
    found = modality_check(recalls, {"all": 400, "longquery": 150})
    assert [(f.subset, f.probe) for f in found] == [("all", "only_text"), ("longquery", "only_text")]
    assert found[0].margin > 1.0
    text = format_modality_check(found, k=10, label="notellm2")
    assert "WARNING" in text and "full 0.140 < only_text 0.190" in text and "image drowns the text" in text


def test_silent_on_a_healthy_model_and_within_noise():
    healthy = {"full": {"all": 0.60}, "only_text": {"all": 0.45}, "only_image": {"all": 0.30}}
    assert modality_check(healthy, {"all": 400}) == []
    assert "ok" in format_modality_check([], k=10)
    close = {"full": {"all": 0.50}, "only_text": {"all": 0.51}}  # 0.01 on 100 queries: well inside one SE (0.07)
    assert modality_check(close, {"all": 100}) == []


def test_text_drowning_the_image_is_named_too():
    found = modality_check({"full": {"shortquery": 0.03}, "only_image": {"shortquery": 0.25}}, {"shortquery": 300})
    assert found and found[0].probe == "only_image"
    assert "image neglect" in format_modality_check(found, k=10)


def test_noise_is_the_standard_error_of_the_difference():
    assert math.isclose(difference_noise(0.5, 0.5, 100), math.sqrt(0.25 / 100 * 2))
    assert difference_noise(0.5, 0.4, 0) == math.inf
