"""oxy's benchmarks (run as scripts: ``.venv/bin/python bench/NAME.py``) and their helpers."""
