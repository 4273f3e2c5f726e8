"""On PYTHONPATH, this makes the interpreter behave as if llama_cpp were not installed.

A None entry in sys.modules makes `import llama_cpp` raise ImportError and
importlib.util.find_spec("llama_cpp") return None, exactly as on a machine without the package.
"""

import sys

sys.modules["llama_cpp"] = None
