import numpy as np
import torch

from probes.capture.sampling import from_keys, grid_keys, rate_key, to_keys
from probes.sinks import position_hash


def test_grid_keys_are_the_numpy_hash_bit_for_bit():
    keys = grid_keys(7, 5, 3, (4, 6), 0x40E7, "cpu")
    b, y, x = np.meshgrid(np.arange(5, 8), np.arange(4), np.arange(6), indexing="ij")
    ref = position_hash(7, b, y, x, salt=0x40E7).ravel()
    np.testing.assert_array_equal(from_keys(keys), ref)
    assert torch.equal(to_keys(ref), keys)


def test_keys_order_and_threshold_follow_the_unsigned_hash():
    keys = grid_keys(1, 0, 50, (8, 8), 0x5EED, "cpu")
    h = from_keys(keys)
    assert h.max() > np.uint64(1 << 63) > h.min()   # both halves of the uint64 range occur
    np.testing.assert_array_equal(torch.sort(keys, stable=True).indices.numpy(), np.argsort(h, kind="stable"))
    for rate in (1e-3, 0.3, 0.999):
        np.testing.assert_array_equal((keys < rate_key(rate)).numpy(), h < np.uint64(rate * 2.0**64))


def test_batch_keys_from_shared_image_and_position_parts_equal_grid_keys():
    # A batch computes the image part of the hash once per salt and the position part once per
    # capture (kept in the scratch's memo across batches): the same keys as grid_keys, which
    # equal the numpy hash (test above).
    from probes.capture.accumulate import _Scratch
    from probes.capture.sampling import _Batch

    scratch = _Scratch()
    for offset, size in [(0, 5), (5, 3), (8, 1)]:
        batch = _Batch(offset, scratch)
        batch.size = size
        for hw in [(4, 6), (2, 2), (4, 6)]:
            for salt in (0x40E7, 0x5EED):
                got = batch.keys(7, hw, salt, torch.device("cpu"))
                assert torch.equal(got, grid_keys(7, offset, size, hw, salt, "cpu"))
    assert sorted(k[1] for k in scratch.memo) == [(2, 2), (4, 6)]
