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


class _Extent:
    def __init__(self, lo, hi, a):
        self.ch_min, self.ch_max, self._a = np.asarray(lo, float), np.asarray(hi, float), a

    def abs_quantile(self, q):
        return self._a


def test_streaming_range_sees_the_extremes_the_reservoir_missed():
    from analysis.quantization import calibrated_metrics, fake_quantize_range

    rng = np.random.default_rng(0)
    X = rng.uniform(0, 1, size=(500, 3))
    # all values reach 6 in channel 0, the reservoir only 1: the stream's range is wider
    m = calibrated_metrics(X, _Extent([0, 0, 0], [6, 1, 1], a=6.0))
    reservoir = quantization_metrics(X)["int8_sqnr_db_per_channel"].value
    assert m["int8_sqnr_db_stream"].value < reservoir - 3
    want = sqnr_db(X, fake_quantize_range(X, np.zeros(3), np.array([6.0, 1, 1])))
    assert m["int8_sqnr_db_stream"].value == pytest.approx(want)
    # clipping the per-tensor range at a = 0.5 clips half of the values: worse than no clipping
    clipped = calibrated_metrics(X, _Extent([0, 0, 0], [1, 1, 1], a=0.5))["int8_sqnr_db_clipped"].value
    assert clipped == pytest.approx(sqnr_db(X, np.clip(X, 0, 0.5)), abs=0.5)
    none = calibrated_metrics(X, None)
    assert np.isnan(none["int8_sqnr_db_stream"].value)
    assert none["int8_sqnr_db_stream"].reason.startswith("not available: the probe result has no streaming")


def _plain_fake_quantize(x, per_channel, symmetric, bits=8):
    """The module docstring's formulas, column by column or on the whole array, in plain numpy."""
    cols = [x[:, [c]] for c in range(x.shape[1])] if per_channel else [x]
    out = []
    for v in cols:
        if symmetric:
            qmax = 2 ** (bits - 1) - 1
            s = np.abs(v).max() / qmax if np.abs(v).max() > 0 else 1.0
            out.append(np.clip(np.round(v / s), -qmax, qmax) * s)
        else:
            qmax = 2**bits - 1
            lo, hi = min(v.min(), 0.0), max(v.max(), 0.0)
            s = (hi - lo) / qmax if hi > lo else 1.0
            zp = np.clip(np.round(-lo / s), 0, qmax)
            out.append((np.clip(np.round(v / s) + zp, 0, qmax) - zp) * s)
    return np.hstack(out)


def test_four_schemes_equal_the_plain_formulas_exactly():
    # the metric shares one min / max pass between the schemes and quantizes in place
    rng = np.random.default_rng(7)
    X = np.column_stack([rng.normal(size=300), rng.uniform(0, 6, 300), -rng.exponential(size=300), np.zeros(300)])
    got = quantization_metrics(X)
    for name, (per_channel, symmetric) in QUANTIZATION_METRICS.items():
        q = _plain_fake_quantize(X, per_channel, symmetric)
        np.testing.assert_array_equal(fake_quantize(X, per_channel=per_channel, symmetric=symmetric), q)
        want = 10 * math.log10(np.sum(X**2) / np.sum((X - q) ** 2))
        assert got[name].value == want, name


@pytest.mark.parametrize("with_extent", [True, False])
def test_resampled_metrics_equal_the_full_functions_exactly(with_extent):
    # the study's redraws compute only RESAMPLED_METRICS; each value must be the full functions' own
    from analysis.quantization import RESAMPLED_METRICS, calibrated_metrics, resampled_metrics
    from probes.sinks import Extent

    rng = np.random.default_rng(3)
    X = np.column_stack([rng.normal(size=400), rng.uniform(0, 6, 400), -rng.exponential(size=400),
                         np.zeros(400), 50 * rng.standard_t(2, size=400)])
    extent = None
    if with_extent:
        extent = Extent(X.shape[1], "relu6")
        extent.update(np.vstack([X, 3 * X[:7]]))  # wider ranges than the points, and a clipped tail
    assert RESAMPLED_METRICS == ("int8_sqnr_db", "int8_sqnr_db_per_channel", "int8_sqnr_db_stream",
                                 "int8_sqnr_db_clipped")
    for rows in (np.arange(400), np.sort(rng.choice(400, 200, replace=False)), np.arange(3)):
        full = quantization_metrics(X[rows]) | calibrated_metrics(X[rows], extent)
        got = resampled_metrics(X[rows], extent)
        assert list(got) == list(RESAMPLED_METRICS)
        for k in RESAMPLED_METRICS:
            assert math.isfinite(got[k].value) == with_extent or not k.endswith(("stream", "clipped"))
            assert (got[k].value == full[k].value or (math.isnan(got[k].value) and math.isnan(full[k].value))), k
            assert got[k].reason == full[k].reason, k
    bad = X.copy()
    bad[0, 0] = np.nan
    with pytest.warns(NonFiniteWarning):
        full = quantization_metrics(bad) | calibrated_metrics(bad, extent)
    with pytest.warns(NonFiniteWarning):
        got = resampled_metrics(bad, extent)
    assert {k: got[k].reason for k in got} == {k: full[k].reason for k in RESAMPLED_METRICS}
