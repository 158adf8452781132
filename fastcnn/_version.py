"""fastcnn's version: one place, read by the package, its environment records and setup.py."""
__version__ = "0.1.0"
