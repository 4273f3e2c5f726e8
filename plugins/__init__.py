"""The built-in training plugins. They register through entry points (pyproject.toml), exactly as
a third-party package's plugins do; their modules are imported only when a workflow names them,
so listing the plugins never imports torch."""
