"""world_model: action-conditioned video world models (docs/ARCHITECTURE.md, "World model").

The model classes are exported lazily: diffusers records a component's library as ``world_model``
in ``model_index.json`` and looks the class up here when it loads a pipeline directory, while
``import world_model.base`` stays free of diffusers.
"""
_LAZY = {"LatentVideoDiT": "world_model.models", "WanWorldTransformer": "world_model.models",
         "WorldModelPipeline": "world_model.pipeline", "LearnedWorldModel": "world_model.learned",
         "load_world_model": "world_model.learned"}


def __getattr__(name):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'world_model' has no attribute {name!r}")
