"""GridTwin: a digital twin and governance cockpit for smart communities (the pure library)."""

__version__ = "0.1.0"
