"""Start an IPython kernel as a fresh Colab runtime has it: havoc_lite is not installed.

The test venv has havoc_lite installed (editable) and on PYTHONPATH; both are hidden from this
kernel, so the notebook's set-up cell has to install it (from a wheel on the fake Drive, into
$PIP_TARGET). Used as a kernelspec's argv: `python fresh_kernel.py -f {connection_file}`.
"""
import os
import sys

sys.path[:] = [p for p in sys.path if not os.path.isfile(os.path.join(p or ".", "havoc_lite", "__init__.py"))]
sys.meta_path[:] = [f for f in sys.meta_path
                    if "havoc_lite" not in (getattr(f, "__module__", "") or "") + repr(f)]
for name in [m for m in sys.modules if m == "havoc_lite" or m.startswith("havoc_lite.")]:
    del sys.modules[name]

from ipykernel import kernelapp  # noqa: E402

kernelapp.launch_new_instance()
