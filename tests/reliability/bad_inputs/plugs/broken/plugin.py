"""A folder plugin whose import fails: the CLI must name this folder."""

raise ImportError("missing dependency xyz_not_installed")
