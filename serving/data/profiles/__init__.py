"""Bundled data files (a package so that setup.cfg package_data ships the TOML files)."""
