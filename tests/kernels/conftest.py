"""Kernel tests run the Triton kernels in the CPU interpreter; helpers live in kernel_test_utils.py."""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # must precede the first `import triton`
