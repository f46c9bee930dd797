"""These notebooks are run by tests/test_browser.py in JupyterLab (pytest -m browser), not by nbval."""

collect_ignore_glob = ["*.ipynb"]
