"""UniFashion: one model for every multimodal fashion task.

    from unifashion import UniFashion
    model = UniFashion.from_checkpoint("runs/demo/retrieval.ckpt")

`UniFashion` and `GalleryIndex` are imported on first use, so `import unifashion.data` stays light.
"""

__version__ = "0.1.0"
__all__ = ["GalleryIndex", "UniFashion", "__version__"]


def __getattr__(name: str):
    if name in ("UniFashion", "GalleryIndex"):
        from unifashion import api

        return getattr(api, name)
    raise AttributeError(f"module 'unifashion' has no attribute {name!r}")
