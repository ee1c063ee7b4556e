"""Tiny networks gain nothing from intra-op threads, and 2 threads per process on a 2-core machine that is
busy elsewhere make every op wait on a spinning peer (a 64x64 MLP step took 17 ms instead of 0.2 ms):
the tests and the CLI subprocesses they start run single-threaded."""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)
