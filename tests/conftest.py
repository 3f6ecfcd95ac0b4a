"""Test-wide settings: one torch thread (small models; avoids oversubscribing 2-core machines)."""

import os

import torch

torch.set_num_threads(int(os.environ.get("BNPROBE_TEST_THREADS", "1")))
