"""Fleet mode: one suite over many CI runners; each test runs once, on the cheapest runner that can run it.

``assignment`` decides (pure), ``check`` holds a runner to its profile (pure), ``plugin`` routes pytest's
hooks to them and is registered only when a fleet is configured.
"""
