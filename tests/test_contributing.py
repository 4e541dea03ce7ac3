"""CONTRIBUTING.md's "Adding a backbone" walk-through works verbatim: its class, run as written, honours the vision
contract; its entry-point table and its recipe snippet parse and name the plugin by the same short name."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

from notellm2_pl.plugins.testing import check_vision_contract

TEXT = (Path(__file__).resolve().parents[1] / "CONTRIBUTING.md").read_text(encoding="utf-8")
WALKTHROUGH = TEXT[TEXT.index("## Adding a backbone"):]


def _block(lang: str, contains: str) -> str:
    blocks = re.findall(rf"```{lang}\n(.*?)```", WALKTHROUGH, re.DOTALL)
    return next(b for b in blocks if contains in b)


def test_walkthrough_class_honours_the_vision_contract():
    namespace: dict = {}
    exec(compile(_block("python", "class MyVision"), "CONTRIBUTING.md", "exec"), namespace)  # noqa: S102
    vision = namespace["MyVision"].tiny()
    check_vision_contract(vision)
    assert vision.hidden_size == 32


def test_walkthrough_entry_point_and_recipe_agree():
    table = tomllib.loads(_block("toml", "entry-points"))
    (group, entries), = table["project"]["entry-points"].items()
    assert group == "notellm2_pl.vision_encoders" and entries == {"MyVision": "my_vision.encoder:MyVision"}
    recipe = yaml.safe_load(_block("yaml", "class_path"))
    assert recipe["model"]["vision"]["class_path"] == "MyVision"  # users type the entry name, which is the class name
