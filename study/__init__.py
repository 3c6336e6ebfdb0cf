"""The reproduction study: `python -m study` from the repository (see study/__main__.py)."""
