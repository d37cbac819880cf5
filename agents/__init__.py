"""The AMAS agents: one module per agent, plain Python, no Prefect.

Each module exposes one agent object and registers it in ``pyproject.toml`` under the
``amas.agents`` entry-point group; ``amas.registry`` finds it there by name.
"""
