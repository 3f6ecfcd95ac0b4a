"""Test-wide settings: one torch thread (small models; avoids oversubscribing 2-core machines)."""

import os
import sys

import pytest
import torch

torch.set_num_threads(int(os.environ.get("BNPROBE_TEST_THREADS", "1")))


@pytest.fixture(autouse=True)
def _keep_main_module():
    """Streamlit's AppTest runs page scripts as ``__main__`` and leaves its temporary script there;
    a later spawn-started process (Dask workers, report pools) would then re-run that script and
    die. Restore the real ``__main__`` after every test."""
    main = sys.modules.get("__main__")
    saved = {k: getattr(main, k) for k in ("__file__", "__spec__") if hasattr(main, k)}
    yield
    sys.modules["__main__"] = main
    for k, v in saved.items():
        setattr(main, k, v)


@pytest.fixture(autouse=True)
def _same_torch_threads(request):
    """A test must leave torch's thread count as it found it: tests compare one-process results with
    pool workers' results, and the count changes the last float digits of reductions."""
    threads = torch.get_num_threads()
    yield
    after = torch.get_num_threads()
    if after != threads:
        torch.set_num_threads(threads)
        pytest.fail(f"{request.node.nodeid} changed torch's thread count from {threads} to {after}")
