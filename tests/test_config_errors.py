"""Config errors in the user's words (wrong plugin name, option typos, missing files and data root)."""

from __future__ import annotations

from pathlib import Path

import pytest

from notellm2_pl.commands.config_check import preflight

DEMO = str(Path(__file__).resolve().parents[1] / "recipes" / "demo.yaml")


@pytest.mark.parametrize(("argv", "expected"), [
    (["--model.llm.class_path", "HFCausalLMX"], "No plugin named 'HFCausalLMX'.*Did you mean 'HFCausalLM'.*list"),
    (["--model.vision.class_path=CLIPVisio"], "Did you mean 'CLIPVision'"),
    (["--data.rooot", "x"], "data has no option 'rooot'. Did you mean 'root'"),
    (["--model.encoder.micll", "false"], "model.encoder has no option 'micll'. Did you mean 'micl'"),
    (["--model.micl", "false"], "model has no option 'micl'; it is set as model.encoder.micl now"),
    (["--model.connector.init_args.num_querys", "3"], "no option 'num_querys' for QFormerConnector.*num_query_tokens"),
])
def test_override_mistakes_are_named(argv: list[str], expected: str) -> None:
    problem = preflight(["--config", DEMO, *argv])
    assert problem is not None
    import re

    assert re.search(expected, problem), problem


def test_valid_recipe_and_overrides_pass() -> None:
    assert preflight(["--config", DEMO, "--trainer.max_epoch", "1", "--data.root", "/x", "--model.encoder.micl",
                      "false", "--model.vision.class_path", "SiglipVision", "--print_config"]) is None


def test_recipe_file_mistakes(tmp_path: Path) -> None:
    text = Path(DEMO).read_text()
    bad = tmp_path / "typo.yaml"
    bad.write_text(text.replace("  batch_size: 32", "  batch_sise: 32"))
    assert f"{bad}: data has no option 'batch_sise'. Did you mean 'batch_size'" in preflight(["--config", str(bad)])
    bad.write_text(text.replace("class_path: QFormerConnector", "class_path: QFormerConector"))
    assert "Did you mean 'QFormerConnector'" in preflight(["-c", str(bad)])
    bad.write_text(text.replace("      num_layers: 2", "      num_layer: 2"))
    assert "no option 'num_layer' for QFormerConnector" in preflight(["-c", str(bad)])
    assert "not found" in preflight(["--config", str(tmp_path / "nope.yaml")])
    bad.write_text(text.replace("    micl: true", "    mcl: true"))
    assert f"{bad}: model.encoder has no option 'mcl'. Did you mean 'micl'" in preflight(["-c", str(bad)])
    bad.write_text(text.replace("  encoder:\n    micl: true", "  micl: true\n  encoder:"))
    assert "model has no option 'micl'; it is set as model.encoder.micl now" in preflight(["-c", str(bad)])


def test_cli_exits_2_with_the_message(capsys: pytest.CaptureFixture) -> None:
    from notellm2_pl.commands.main import main

    assert main(["fit", "--config", DEMO, "--print_config", "--model.llm.class_path", "HFCausalLMX"]) == 2
    assert "Did you mean 'HFCausalLM'" in capsys.readouterr().err


def test_missing_data_root_says_what_to_type(tmp_path: Path) -> None:
    from notellm2_pl.data.datamodule import NoteDataModule
    from notellm2_pl.data.problems import DataError

    with pytest.raises(DataError, match=r"does not exist.*python -m notellm2_pl synth --out .*--data.root"):
        NoteDataModule(str(tmp_path / "missing"))._split("train")


def test_json_plugin_values_are_checked_not_misread() -> None:
    ok = '{"class_path": "CLIPVision", "init_args": {"pretrained": "/x"}}'
    assert preflight(["--config", DEMO, "--model.vision", ok]) is None
    assert preflight(["--config", DEMO, "--model.vision", "notellm2_pl_backbones.hf_vision.CLIPVision"]) is None
    bad = '{"class_path": "CLIPVison", "init_args": {"pretrained": "/x"}}'
    assert "Did you mean 'CLIPVision'" in preflight(["--config", DEMO, "--model.vision", bad])


def test_gpu_accelerator_without_gpu_names_the_cpu_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    problem = preflight(["--config", DEMO, "--trainer.accelerator", "gpu"])
    assert problem is not None
    assert problem.startswith("--trainer.accelerator: trainer.accelerator is 'gpu', but this machine has no CUDA GPU")
    assert "--trainer.accelerator cpu --trainer.precision 32-true" in problem  # demo: 1 device, no strategy
    assert "cuda" in preflight(["--config", DEMO, "--trainer.accelerator=cuda"])
    assert preflight(["--config", DEMO, "--trainer.accelerator", "gpu", "--print_config"]) is None  # runs nothing
    assert preflight(["--config", DEMO, "--trainer.accelerator", "gpu", "--trainer.accelerator", "cpu"]) is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert preflight(["--config", DEMO, "--trainer.accelerator", "gpu"]) is None


def test_gpu_recipe_without_gpu_lists_every_setting_to_change(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    recipe = str(Path(DEMO).with_name("siglip_qwen.yaml"))
    problem = preflight(["--config", recipe])
    assert problem is not None and problem.startswith(f"{recipe}: trainer.accelerator is 'gpu'")
    assert ("--trainer.accelerator cpu --trainer.devices 1 --trainer.strategy auto --trainer.precision 32-true"
            in problem)
    assert preflight(["--config", recipe, "--trainer.accelerator", "cpu", "--trainer.devices", "1"]) is None
