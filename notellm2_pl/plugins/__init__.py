"""Plugins: the contract every LLM, vision encoder and connector implements, and the registry that finds them.

A plugin author needs only this package::

    from notellm2_pl.plugins import ImageConfig, VisionEncoder, VisionOutput

``contract`` holds the abstract base classes and the data they exchange, ``registry`` the entry-point lookup,
``testing`` the download-free tiny builders and contract checks the test-suite runs over every plugin.
"""

from notellm2_pl.plugins.contract import (
    Connector,
    ImageConfig,
    LLMBackbone,
    LLMOutput,
    PluginInfo,
    VisionEncoder,
    VisionOutput,
    find_layer_list,
)

__all__ = ["Connector", "ImageConfig", "LLMBackbone", "LLMOutput", "PluginInfo", "VisionEncoder", "VisionOutput",
           "find_layer_list"]
