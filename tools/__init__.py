"""Developer tooling kept out of the installed package: run from a checkout (``python -m tools.X``).

* ``tools.synthetic``: a synthetic scored run (images + result files) for report tests and docs;
* ``tools.screenshot``: headless Chromium on a report (PNG screenshot, loaded-image count).
"""
