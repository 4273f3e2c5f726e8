"""On PYTHONPATH, this makes the interpreter behave as if bitsandbytes were not installed.

A None entry in sys.modules makes `import bitsandbytes` raise ImportError and
importlib.util.find_spec("bitsandbytes") return None, exactly as on a machine without the package.
"""

import sys

sys.modules["bitsandbytes"] = None
