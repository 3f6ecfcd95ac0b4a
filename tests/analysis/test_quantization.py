import math

import numpy as np
import pytest

from analysis.quantization import QUANTIZATION_METRICS, fake_quantize, quantization_metrics, sqnr_db
from analysis.spectrum import NonFiniteWarning

# Textbook SQNR of a uniform quantizer on data uniform over its full range [-A, A]:
# signal power A^2 / 3, noise power (uniform rounding error) D^2 / 12 with step D = 2A / L for
# L steps, so SQNR = (A^2 / 3) / (4 A^2 / (12 L^2)) = L^2, i.e. 20 log10(L) dB.
# With L = 2^8 that is 6.02 * 8 = 48.16 dB. min-max calibration gives L = 255 (affine, 48.13 dB)
# or 254 (symmetric -127..127, 48.10 dB): both within 0.5 dB of the textbook value.
TEXTBOOK_DB = 20 * math.log10(2**8)


@pytest.fixture(scope="module")
def uniform():
    return np.random.default_rng(0).uniform(-1, 1, size=(50_000, 4))


def test_uniform_data_gives_the_textbook_sqnr(uniform):
    m = quantization_metrics(uniform)
    assert TEXTBOOK_DB == pytest.approx(48.16, abs=0.01)
    for name in QUANTIZATION_METRICS:
        assert m[name].value == pytest.approx(TEXTBOOK_DB, abs=0.5), name
    assert m["int8_sqnr_db"].value == pytest.approx(20 * math.log10(255), abs=0.1)
    assert m["int8_sqnr_db_symmetric"].value == pytest.approx(20 * math.log10(254), abs=0.1)


def test_relu_like_data_loses_6db_under_symmetric_quantization():
    # Uniform on [0, 1]: power 1/3. Affine: D = 1/255 -> SQNR = 4 * 255^2 (54.2 dB).
    # Symmetric wastes the negative half: D = 1/127 -> 4 * 127^2 (48.2 dB).
    x = np.random.default_rng(1).uniform(0, 1, size=(50_000, 2))
    m = quantization_metrics(x)
    assert m["int8_sqnr_db"].value == pytest.approx(10 * math.log10(4 * 255**2), abs=0.3)
    assert m["int8_sqnr_db_symmetric"].value == pytest.approx(10 * math.log10(4 * 127**2), abs=0.3)


def test_per_channel_helps_when_channel_ranges_differ():
    rng = np.random.default_rng(2)
    x = np.column_stack([rng.uniform(-1, 1, 5000), rng.uniform(-0.01, 0.01, 5000)])
    tensor = fake_quantize(x)
    channel = fake_quantize(x, per_channel=True)
    assert sqnr_db(x[:, 1], channel[:, 1]) == pytest.approx(TEXTBOOK_DB, abs=0.5)
    assert sqnr_db(x[:, 1], tensor[:, 1]) < 20  # one scale for both: the small channel is lost
    m = quantization_metrics(x)
    assert m["int8_sqnr_db_per_channel"].value >= m["int8_sqnr_db"].value


def test_quantization_is_idempotent_and_keeps_zero(uniform):
    q = fake_quantize(uniform)
    np.testing.assert_allclose(fake_quantize(q), q, atol=1e-12)
    x = np.array([[0.0, 0.3], [1.0, -0.7]])
    assert fake_quantize(x)[0, 0] == 0.0


def test_zero_and_constant_points():
    zero = quantization_metrics(np.zeros((10, 3)))
    assert all(math.isnan(v.value) and "zero signal" in v.reason for v in zero.values())
    const = quantization_metrics(np.full((10, 3), 2.5))
    assert all(v.value == math.inf and "exact" in v.reason for v in const.values())


def test_non_finite_points_warn():
    x = np.ones((4, 2))
    x[1, 1] = np.nan
    with pytest.warns(NonFiniteWarning, match="'blocks.0.project'"):
        m = quantization_metrics(x, point="blocks.0.project")
    assert math.isnan(m["int8_sqnr_db"].value)


def test_bad_bits_message():
    with pytest.raises(ValueError, match=r"The 'bits' parameter of fake_quantize must be an int in \[2, 16\]\. Got 1 instead\."):
        fake_quantize(np.ones((2, 2)), bits=1)
