"""Registry: names, class paths, duplicates, errors, and a real third-party entry point via importlib.metadata."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from notellm2_pl import registry
from notellm2_pl.plugins.contract import Connector, LLMBackbone, VisionEncoder


def test_builtin_names_resolve_to_contract_classes():
    assert "HFCausalLM" in registry.names("llm")
    assert {"CLIPVision", "SiglipVision", "TimmVision"} <= set(registry.names("vision"))
    assert {"QFormerConnector", "MLPConnector", "NoConnector"} <= set(registry.names("connector"))
    assert issubclass(registry.get("llm", "HFCausalLM"), LLMBackbone)
    assert issubclass(registry.get("vision", "CLIPVision"), VisionEncoder)
    assert issubclass(registry.get("connector", "QFormerConnector"), Connector)
    # entry name == class name == what a recipe types as class_path
    for info in registry.infos():
        assert info.value.endswith(":" + info.name)
        assert info.distribution != "<unknown distribution>"


def test_unknown_name_lists_what_exists_and_suggests():
    with pytest.raises(registry.PluginError) as err:
        registry.get("vision", "ClipVision")
    msg = str(err.value)
    assert "Did you mean 'CLIPVision'" in msg and "SiglipVision" in msg and "notellm2_pl list" in msg


def test_resolve_dotted_path():
    cls = registry.resolve("connector", "notellm2_pl_backbones.connectors.MLPConnector")
    assert cls is registry.get("connector", "MLPConnector")


def _fake_dist(site, dist_name: str, pkg: str, entry: str) -> None:
    """Write a real installed distribution: a package plus *.dist-info with entry_points.txt."""
    (site / pkg).mkdir()
    (site / pkg / "__init__.py").write_text(textwrap.dedent("""
        import torch
        from notellm2_pl.plugins.contract import Connector

        class {name}(Connector):
            def num_tokens(self, num_inputs):
                return 3

            def forward(self, tokens):
                return tokens.new_zeros(tokens.shape[0], 3, self.out_dim)

            @classmethod
            def tiny(cls):
                return cls(8, 16)
    """).format(name=entry))
    info = site / f"{dist_name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist_name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[notellm2_pl.connectors]\n{entry} = {pkg}:{entry}\n")


def _run(site, code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(site)!r})\n" + code],
                          check=False, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_third_party_entry_point_is_discovered(tmp_path):
    _fake_dist(tmp_path, "acme-connector", "acme_conn", "AcmeConnector")
    res = _run(tmp_path, textwrap.dedent("""
        from notellm2_pl import registry
        from notellm2_pl.plugins.testing import check_connector_contract
        cls = registry.get("connector", "AcmeConnector")
        check_connector_contract(cls.tiny())
        info = [i for i in registry.infos() if i.name == "AcmeConnector"][0]
        print(info.distribution)
    """))
    assert res.returncode == 0, res.stderr
    assert "acme-connector 1.0" in res.stdout


@pytest.mark.slow
def test_duplicate_names_are_an_error(tmp_path):
    _fake_dist(tmp_path, "dup-connector", "dup_conn", "MLPConnector")
    res = _run(tmp_path, "from notellm2_pl import registry\nregistry.names('connector')")
    assert res.returncode != 0
    assert "Duplicate plugin name 'MLPConnector'" in res.stderr and "dup-connector" in res.stderr


@pytest.mark.slow
def test_list_command_prints_every_plugin():
    res = subprocess.run([sys.executable, "-m", "notellm2_pl", "list"], check=False, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    for info in registry.infos():
        assert info.name in res.stdout
    assert "notellm2-pl" in res.stdout


def test_import_has_no_side_effects():
    code = ("import sys, notellm2_pl; "
            "print(any(m in sys.modules for m in ('transformers', 'timm', 'torch', 'lightning')))")
    res = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60)
    assert res.stdout.strip() == "False"
