"""UniFashion: one model for every multimodal fashion task."""

__version__ = "0.1.0"
