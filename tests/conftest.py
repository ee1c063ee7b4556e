"""Tiny networks gain nothing from intra-op threads, and 2 threads per process on a 2-core machine that is
busy elsewhere make every op wait on a spinning peer (a 64x64 MLP step took 17 ms instead of 0.2 ms):
the tests and the CLI subprocesses they start run single-threaded.

The key that signs checkpoints' env state (lightning_pg.trust) lives in a folder of this test session, not in
the user's ~/.config; the CLI subprocesses inherit it."""
import os
import tempfile

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("LIGHTNING_PG_KEY_FILE", os.path.join(tempfile.mkdtemp(prefix="lightning_pg_key_"), "checkpoint.key"))

import torch  # noqa: E402

torch.set_num_threads(1)


def pytest_collection_modifyitems(items):
    """The README test first: it is by far the longest (its blocks run in order, one process), and a test
    that long handed out last keeps one worker busy while the others have nothing left to do."""
    items.sort(key=lambda item: not item.nodeid.startswith("tests/test_readme.py"))
