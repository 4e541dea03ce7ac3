"""notellm2_effnet: EfficientNet-Lite0 as a notellm2_pl vision encoder (example third-party plugin).

Nothing is imported here: the registry imports :mod:`notellm2_effnet.encoder` only when the plugin is asked for.
"""

__version__ = "0.1.0"
