"""The real Vestige server (1.3.0 and 2.0.0) built from the vendored sources, for the tests."""
