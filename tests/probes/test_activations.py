"""The activation vocabulary: the inverse undoes each activation where it is injective."""

import numpy as np
import pytest
import torch

from probes.activations import ACTIVATIONS, active_mask, apply, invert


@pytest.mark.parametrize("kind", ACTIVATIONS)
def test_invert_undoes_apply_on_the_usable_units(kind):
    z = np.linspace(-8.0, 8.0, 321)[None, :]
    y = apply(kind, torch.from_numpy(z)).numpy()
    back, usable = invert(y, kind)
    assert usable.any()
    np.testing.assert_allclose(back[usable], z[usable], rtol=1e-12, atol=1e-12)
    if kind in ("relu", "relu6"):
        # the injective units are exactly the active ones (one rule)
        np.testing.assert_array_equal(usable, active_mask(y, kind))
    if kind == "hswish":
        assert not usable[z <= 0].any()  # negative outputs come from two inputs each


def test_invert_refuses_an_unknown_kind():
    with pytest.raises(ValueError, match="The 'kind' parameter of invert must be one of"):
        invert(np.zeros((1, 2)), "gelu")
