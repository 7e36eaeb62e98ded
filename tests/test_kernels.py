"""The compiled kernels give the numbers of the NumPy and SciPy expressions they replace.

Each kernel's docstring states the expression; here it is evaluated with
NumPy on random strips (with NaNs, shadows and out-of-image points) and
compared. Occupancy and counts downstream are therefore unchanged by the
compiled path.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import ndimage

from toolkit import _fast

pytestmark = pytest.mark.filterwarnings("ignore:Mean of empty slice", "ignore:Degrees of freedom")


def _strip(seed, shape=(3, 40, 11, 3)):
    rng = np.random.default_rng(seed)
    r = rng.uniform(0.6, 1.4, shape)
    nt = (r * rng.uniform(0.2, 1.3, shape[:-1])[..., None]).astype("float32")
    nt += rng.normal(0, 0.02, shape).astype("float32")
    nt[rng.random(shape[:-1]) < 0.1] = np.nan  # masked samples: every band
    return nt, r


def test_bilinear_samples_equal_map_coordinates():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (3, 40, 50)).astype("uint8")
    bad = rng.random((40, 50)) < 0.05
    rows = rng.uniform(-2, 41, 20000)
    cols = rng.uniform(-2, 51, 20000)
    rows[:50], cols[:50] = np.round(rows[:50]), np.round(cols[:50])  # on pixel centres
    rows[50:60], cols[60:70] = 39.0, 49.0  # on the last row / column
    rows[80] = np.nan
    value = np.empty((rows.size, 3), "float32")
    ok = np.empty(rows.size, bool)
    _fast.bilinear_samples(img, bad, rows, cols, value, ok)
    rc = np.stack([rows, cols])
    rc = np.where(np.isfinite(rc), rc, -10.0)
    for b in range(3):
        ref = ndimage.map_coordinates(
            img[b].astype("float32"), rc, order=1, mode="constant", cval=np.nan
        )
        np.testing.assert_allclose(value[:, b], ref, rtol=0, atol=1e-4, equal_nan=True)
    share = ndimage.map_coordinates(bad.astype("float32"), rc, order=1, mode="constant", cval=1.0)
    np.testing.assert_array_equal(ok, share < 1e-6)
    assert np.isnan(value[80]).all() and not ok[80]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_masked_values_and_gains_equal_numpy(dtype):
    rng = np.random.default_rng(5)
    val = rng.uniform(0.0, 255.0, (4, 2, 30, 5, 3)).astype(dtype)
    valid = rng.random(val.shape[:-1]) < 0.8
    want = np.where(valid[..., None], val, np.nan).astype("float32")
    got = _fast.masked_float32(val[:, :, ::-1], valid[:, :, ::-1])  # strided views too
    np.testing.assert_array_equal(got, want[:, :, ::-1])
    assert got.dtype == np.float32
    gain = rng.uniform(20.0, 200.0, (4, 3)).astype("float32")
    out = np.empty_like(want)
    assert _fast.divide_by_gains(want, gain, out=out) is out
    np.testing.assert_array_equal(out, want / gain[:, None, None, None, :])
    with pytest.raises(ValueError, match="shapes"):
        _fast.masked_float32(val, valid[:, :1])
    with pytest.raises(ValueError, match="C-contiguous"):
        _fast.divide_by_gains(want[:, :, ::-1], gain)


def test_scene_medians_at_offsets_equal_numpy():
    nt, _ = _strip(6, shape=(5, 3, 40, 11, 3))
    nt[2] = np.nan  # a scene with nothing seen
    idx = np.array([0, 1, 9, 10])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the all-NaN scene
        want = np.nanmedian(nt[..., idx, :].reshape(5, -1, 3).astype("float64"), axis=1)
    assert np.isnan(want[2]).all() and np.isfinite(want[[0, 1, 3, 4]]).all()
    np.testing.assert_array_equal(_fast.scene_medians_at(nt, idx), want)


def test_shadow_candidates_equal_numpy():
    nt, r = _strip(1)
    with np.errstate(all="ignore"):
        ratio = nt / r
        rho = np.nanmean(ratio, axis=-1)
        spread = np.nanstd(ratio, axis=-1) / np.maximum(rho, 1e-6)
    expected = (rho > 0.15) & (rho < 0.75) & (spread < 0.25)
    got = _fast.shadow_candidates(nt, r)
    assert 50 < expected.sum() < expected.size  # the case tests both outcomes
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("use_shadow, haze", [(False, False), (True, False), (True, True)])
def test_scene_distances_equal_numpy(use_shadow, haze):
    nt, r = _strip(2)
    # besides samples missing in every band: one band missing, and reference bands missing
    # (every distance is NaN there; the kernel skips their explanations)
    nt[0, :5, 0, 1] = np.nan
    r[1, :5, 2, 0] = np.nan
    k_sh = np.array([0.35, 0.4, 0.45])
    reached = np.random.default_rng(3).random(nt.shape[:2]) < 0.5
    lo, hi = 0.9, 1.15
    with np.errstate(all="ignore"):
        d_lit = np.sqrt(np.sum((nt - r) ** 2, axis=-1))
        d, lit = d_lit, np.ones(d_lit.shape, bool)
        if use_shadow:
            shade = k_sh * r
            sc = np.sum(nt * shade, axis=-1) / np.maximum(np.sum(shade * shade, axis=-1), 1e-12)
            sc = np.where(reached[..., None], np.clip(sc, lo, hi), 1.0)
            d_sh = np.sqrt(np.sum((nt - shade * sc[..., None]) ** 2, axis=-1))
            d, lit = np.fmin(d_lit, d_sh), ~(d_sh < d_lit)
        d_clear = d
        if haze:
            seg = 3.0 * np.nanmean(r, axis=-1, keepdims=True) - r
            tau = np.sum((nt - r) * seg, axis=-1) / np.maximum(np.sum(seg * seg, axis=-1), 1e-12)
            tau = np.clip(tau, 0.0, 0.6)
            d = np.fmin(d, np.sqrt(np.sum((nt - r - tau[..., None] * seg) ** 2, axis=-1)))
            tau = np.clip(
                np.sum((r - nt) * r, axis=-1) / np.sum(r * r, axis=-1), 0.0, _fast.HAZE_DIMMING_MAX
            )
            d = np.fmin(d, np.sqrt(np.sum((nt - (1.0 - tau[..., None]) * r) ** 2, axis=-1)))
    none = np.full(nt.shape[:2], np.nan)
    no_edge = np.zeros(nt.shape[:2], bool)
    haze = np.full(nt.shape[:2], int(haze), np.int8)
    w = np.linspace(0.0, 1.0, nt.shape[2])
    got_d, got_plain, got_lit = _fast.scene_distances(
        nt, r, k_sh, use_shadow, reached, lo, hi, haze, none, none, w, no_edge
    )
    np.testing.assert_allclose(got_d, d, rtol=1e-12, atol=0, equal_nan=True)
    np.testing.assert_allclose(got_plain, d, rtol=1e-12, atol=0, equal_nan=True)
    np.testing.assert_array_equal(got_lit, lit)
    if haze.any():
        # code 2: haze explains the sample but leaves the noise's distances (d_plain) alone
        only = _fast.scene_distances(
            nt, r, k_sh, use_shadow, reached, lo, hi, 2 * haze, none, none, w, no_edge
        )
        np.testing.assert_allclose(only[0], d, rtol=1e-12, atol=0, equal_nan=True)
        np.testing.assert_allclose(only[1], d_clear, rtol=1e-12, atol=0, equal_nan=True)
        assert (only[1] > only[0] + 1e-9).any()
    # light factors, interpolated across the strip, where given
    f_lo = np.where(reached, 0.9, np.nan)
    f_hi = np.where(reached, 1.2, np.nan)
    light_d, light_plain, _ = _fast.scene_distances(
        nt, r, k_sh, use_shadow, reached, lo, hi, haze, f_lo, f_hi, w, no_edge
    )
    f = f_lo[..., None] + (f_hi - f_lo)[..., None] * w
    with np.errstate(all="ignore"):
        d_light = np.sqrt(np.sum((nt - f[..., None] * r) ** 2, axis=-1))
    np.testing.assert_allclose(light_plain, d, rtol=1e-12, equal_nan=True)
    np.testing.assert_allclose(
        light_d, np.where(np.isfinite(f), np.fmin(d, d_light), d), rtol=1e-12, equal_nan=True
    )
    assert (light_d < d - 1e-9).any()
    if use_shadow:
        assert 0 < (~lit).sum() < lit.size
        # the blurred edge of a neighbour's shadow: the nearest blend of light and shade
        edge = reached & (np.random.default_rng(4).random(reached.shape) < 0.5)
        pen_d, pen_plain, pen_lit = _fast.scene_distances(
            nt, r, k_sh, use_shadow, reached, lo, hi, haze, none, none, w, edge
        )
        step = shade * sc[..., None] - r
        with np.errstate(all="ignore"):
            alpha = np.sum((nt - r) * step, axis=-1) / np.maximum(np.sum(step * step, -1), 1e-12)
            blend = r + np.clip(alpha, 0.0, 1.0)[..., None] * step
            d_blend = np.sqrt(np.sum((nt - blend) ** 2, axis=-1))
        expected = np.where(edge[..., None], np.fmin(d, d_blend), d)
        np.testing.assert_allclose(pen_d, expected, rtol=1e-12, equal_nan=True)
        np.testing.assert_allclose(pen_plain, d, rtol=1e-12, equal_nan=True)  # noise: without
        np.testing.assert_array_equal(pen_lit, lit)
        assert (pen_d < d - 1e-9).any()


def test_band_mean_ratio_and_masked_median_equal_numpy():
    nt, r = _strip(4)
    with np.errstate(all="ignore"):
        expected = np.nanmean(nt / np.maximum(r, 1e-6), axis=-1)
    np.testing.assert_allclose(
        _fast.band_mean_ratio(nt, r, 1e-6), expected, rtol=1e-12, equal_nan=True
    )
    mask = np.random.default_rng(5).random(nt.shape[:-1]) < 0.4
    ratio = np.where(mask[..., None], nt / r, np.nan).reshape(-1, 3)
    with np.errstate(all="ignore"):
        np.testing.assert_allclose(
            _fast.masked_ratio_median(nt, r, mask), np.nanmedian(ratio, axis=0), rtol=1e-12
        )
    assert np.isnan(_fast.masked_ratio_median(nt, r, np.zeros_like(mask))).all()


def test_long_nanmedian_reads_strided_views_exactly():
    rng = np.random.default_rng(6)
    a = rng.standard_normal((20, 600, 3)).astype("float32")
    a[rng.random(a.shape) < 0.2] = np.nan
    a[5, :, 1] = np.nan  # an all-NaN column
    view = np.moveaxis(a, 1, 0)  # (600, 20, 3), strided
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        expected = np.nanmedian(view.astype("float64"), axis=0)
    got = _fast.nanmedian_axis0(view)
    assert got.shape == (20, 3)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12, equal_nan=True)


def _stack(seed, n_t):
    """A (time, track, along, across, band) float32 stack with NaNs and a sample mask."""
    rng = np.random.default_rng(seed)
    n = rng.uniform(0.2, 1.5, (n_t, 3, 30, 7, 3)).astype("float32")
    n[rng.random(n.shape) < 0.05] = np.nan  # one band missing
    n[rng.random(n.shape[:-1]) < 0.1] = np.nan  # every band missing
    use = rng.random(n.shape[:-1]) < 0.7
    use[:, 0, 0] = False  # a place never usable: NaN, as nanmedian gives
    return n, use


@pytest.mark.filterwarnings("ignore:All-NaN slice")
# odd and even counts; insertion and selection; up to _RANK_MAX values per series ranked,
# more selected
@pytest.mark.parametrize("n_t", [1, 8, 9, 70, 200])
def test_masked_medians_equal_nanmedian_of_the_masked_stack(n_t):
    n, use = _stack(n_t, n_t)
    masked = np.where(use[..., None], n, np.float32(np.nan)).astype("float64")
    with np.errstate(all="ignore"):
        over_time = np.nanmedian(masked, axis=0)
        per_offset = np.nanmedian(masked.reshape(-1, *n.shape[-2:]), axis=0)
        per_scene = np.nanmedian(n.astype("float64").reshape(n_t, -1, n.shape[-1]), axis=1)
    assert np.isnan(over_time[0, 0]).all() and np.isfinite(over_time[1:]).any()
    everywhere = np.ones(n.shape[1:3], bool)
    np.testing.assert_array_equal(_fast.masked_median_over_time(n, use, everywhere), over_time)
    somewhere = everywhere.copy()
    somewhere[1] = False  # only where asked; NaN elsewhere
    part = _fast.masked_median_over_time(n, use, somewhere)
    assert np.isnan(part[1]).all()
    np.testing.assert_array_equal(part[somewhere], over_time[somewhere])
    np.testing.assert_array_equal(_fast.masked_median_per_offset(n, use), per_offset)
    by_scene = _fast.nanmedian_axis0(np.moveaxis(n.reshape(n_t, -1, n.shape[-1]), 1, 0))
    np.testing.assert_array_equal(by_scene, per_scene)


def test_brighter_margin_equals_numpy():
    n, _ = _stack(3, 6)
    lo, hi = np.array([0, 1]), np.array([5, 6])
    n64 = n.astype("float64")  # the kernel sums in float64
    with np.errstate(all="ignore"):
        s0, s1 = np.nanmean(n64[..., lo, :], axis=-2), np.nanmean(n64[..., hi, :], axis=-2)
        b0, b1 = np.nanmean(s0, axis=-1), np.nanmean(s1, axis=-1)
    pick_hi = (np.isnan(b0) | (b1 > b0))[..., None]
    expected = np.where(pick_hi, s1, s0)
    expected = np.where(np.isnan(expected), np.fmax(s0, s1), expected)
    assert pick_hi.any() and not pick_hi.all()
    np.testing.assert_allclose(_fast.brighter_margin(n, lo, hi), expected, rtol=1e-12)
    # some scenes only: their rows, the same numbers
    scenes = np.array([True, False, True, True, False, False])
    np.testing.assert_array_equal(
        _fast.brighter_margin(n, lo, hi, scenes=scenes), _fast.brighter_margin(n, lo, hi)[scenes]
    )
    with pytest.raises(ValueError, match="scenes: expected 6 flags"):
        _fast.brighter_margin(n, lo, hi, scenes=scenes[:4])


def test_short_medians_with_ties_equal_numpy():
    """Series of 1 to 130 values, many tied: ranked up to _RANK_MAX values, selected beyond."""
    rng = np.random.default_rng(7)
    assert 1 < _fast._RANK_MAX < 130
    for m in range(1, 131):
        for _ in range(5):
            v = np.round(rng.normal(1.0, 0.2, m), 1)  # about ten distinct values
            assert _fast._quickselect_median(v.copy(), m) == np.median(v), m
    assert np.isnan(_fast._quickselect_median(np.empty(0), 0))


@pytest.mark.parametrize("n_idx", range(1, _fast.NANMEAN_AT_MAX + 1))
def test_nanmean_at_equals_the_numpy_mean_bit_for_bit(n_idx):
    """As occupancy._nanmean of the offsets: non-finite values left out, all-NaN NaN."""
    from toolkit.occupancy import _nanmean

    rng = np.random.default_rng(n_idx)
    a = rng.random((4, 300, 11)) * 10.0 ** rng.uniform(-3, 3, (4, 300, 11))
    a[rng.random(a.shape) < 0.2] = np.nan
    a[0, :5] = np.inf
    a[1, :5] = -0.0
    idx = rng.choice(11, n_idx, replace=False)
    want = _nanmean(a[..., idx], axis=-1)
    got = _fast.nanmean_at(a, idx.astype(np.int64))
    np.testing.assert_array_equal(got, want)
    assert np.array_equal(np.signbit(got), np.signbit(want))


@pytest.mark.parametrize(("shape", "size"), [((10, 1641), 9), ((10, 1641), 3), ((3, 5), 9)])
def test_running_median_rows_equals_median_filter(shape, size):
    rng = np.random.default_rng(size)
    a = rng.random(shape)
    a[:, ::7] = 0.5  # ties
    expected = ndimage.median_filter(a, size=(1, size), mode="nearest")
    np.testing.assert_array_equal(_fast.running_median_rows(a, size), expected)


def test_ballast_like_mode_finds_the_empty_scenes_under_a_parked_car():
    """A car parked in 9 of 12 scenes is the majority at its place: the ballast-like mode
    (the 3 empty scenes) is found, and used only where it is better than the median."""
    rng = np.random.default_rng(5)
    n_t, n_k, n_a, n_c, n_b = 12, 1, 4, 5, 3
    ballast = np.array([0.42, 0.40, 0.37])
    car = np.array([0.30, 0.33, 0.36])
    n = np.broadcast_to(ballast, (n_t, n_k, n_a, n_c, n_b)).copy()
    parked = np.zeros(n_t, bool)
    parked[3:] = True  # place 0: a car in the last 9 scenes
    n[parked, 0, 0] = car
    two_empty = np.zeros(n_t, bool)
    two_empty[2:] = True  # place 1: a car in 10 scenes, only 2 empty looks
    n[two_empty, 0, 1] = car
    n[:6, 0, 2] = car  # place 2: a car in half the scenes
    n += rng.normal(0, 0.004, n.shape)  # place 3: always empty
    n = n.astype("float32")
    use = np.ones(n.shape[:-1], bool)
    core_idx = np.array([1, 2, 3])
    ball_core = np.broadcast_to(ballast, (n_k, n_a, n_b)).copy()
    ref_core = np.median(n[:, :, :, 1:4].mean(axis=3), axis=0).astype("float64")
    members, better = _fast.ballast_like_mode(n, use, core_idx, ball_core, ref_core, 3, 0.5)
    np.testing.assert_array_equal(members[:, 0, 0], ~parked)
    assert better[0, 0]  # the median was the car; the empty mode is much nearer the ballast
    assert not better[0, 1]  # two empty looks are too few
    np.testing.assert_array_equal(members[:, 0, 2], np.arange(n_t) >= 6)
    assert better[0, 2]  # the median of an even split blends car and ballast: not the empty
    assert not better[0, 3]  # one mode: nothing to change
    # scenes left out by the mask take no part
    use[:3, 0, 0] = False
    members, better = _fast.ballast_like_mode(n, use, core_idx, ball_core, ref_core, 3, 0.5)
    assert not members[:3, 0, 0].any() and not better[0, 0]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_median_of_many_values_equals_numpy(dtype):
    """The histogram-narrowed selection gives np.median's number exactly, at sizes on
    both sides of the switch, odd and even counts, ties, a constant array, infinities,
    a long tail and values packed into one histogram bin."""
    rng = np.random.default_rng(11)
    n = _fast._HIST_MIN
    cases = [
        rng.normal(1.0, 0.05, n - 1),
        rng.normal(1.0, 0.05, n),
        rng.normal(1.0, 0.05, 3 * n + 1),
        rng.normal(1.0, 0.05, 3 * n + 2),
        np.round(rng.normal(0.0, 3.0, 2 * n)),  # many ties, negative values
        np.full(2 * n, 0.7),  # constant
        np.concatenate([rng.normal(1.0, 0.05, 2 * n), [np.inf, -np.inf, np.inf]]),
        np.concatenate([rng.normal(1.0, 1e-7, 2 * n), [1e6, -1e6]]),  # one dense bin
        rng.lognormal(0.0, 2.0, 5 * n),  # a long tail
    ]
    for values in cases:
        v = values.astype(dtype)
        expected = np.median(v.astype("float64"))
        got = _fast._median_of(v.copy(), v.size)
        assert got == expected, (v.size, got, expected)
        buf = np.concatenate([v, np.full(7, 99.0, dtype)])  # only the first m count
        assert _fast._median_of(buf, v.size) == expected
    assert np.isnan(_fast._median_of(np.zeros(3), 0))


def test_masked_median_per_offset_over_many_samples_equals_nanmedian():
    n, use = _stack(12, 400)  # 400 x 3 x 30 samples per offset: the histogram path
    assert use[..., 0].sum() > _fast._HIST_MIN
    masked = np.where(use[..., None], n, np.float32(np.nan)).astype("float64")
    with np.errstate(all="ignore"):
        expected = np.nanmedian(masked.reshape(-1, *n.shape[-2:]), axis=0)
    np.testing.assert_array_equal(_fast.masked_median_per_offset(n, use), expected)
    big = np.random.default_rng(4).uniform(0.5, 1.5, (60, 20, 30, 3)).astype("float32")
    den = np.random.default_rng(5).uniform(0.5, 1.5, big.shape).astype("float32")
    mask = np.ones(big.shape[:-1], bool)
    ratio = (big.astype("float64") / den.astype("float64")).reshape(-1, 3)
    np.testing.assert_array_equal(_fast.masked_ratio_median(big, den, mask), np.median(ratio, 0))
    long = big.reshape(-1, 3)[: 2 * _fast._HIST_MIN + 1].copy()  # long columns, with NaNs
    long[::7, 1] = np.nan
    with np.errstate(all="ignore"):
        expected = np.nanmedian(long.astype("float64"), axis=0)
    np.testing.assert_array_equal(_fast.nanmedian_axis0(long), expected)
    flat = big.copy()
    flat[0, 0, 0, 0] = np.nan
    with np.errstate(all="ignore"):
        assert _fast.nanmedian_flat(flat) == np.nanmedian(flat.astype("float64"))


def _ratio_mode_numpy(nt, r, mask, width):
    """The NumPy expression of ``_fast.masked_ratio_mode``'s docstring."""
    with np.errstate(all="ignore"):
        ratio = nt.astype("float64") / r
    usable = mask & (np.isfinite(ratio) & (ratio > 0)).all(axis=-1)
    x = ratio[usable]
    if x.shape[0] == 0:
        return np.full(nt.shape[-1], np.nan), 0.0
    level = np.log(x[:, 0] * x[:, 1] * x[:, 2]) / 3
    step = width / 4
    n_bins = int(2.0 / step) + 1
    lo = np.median(level) - 1.0
    j = np.floor((level - lo) / step + 0.5).astype(int)
    counts = np.bincount(j[(j >= 0) & (j < n_bins)], minlength=n_bins)
    windows = np.convolve(counts, np.ones(9, int), "valid")  # centred on bins 4 .. n - 5
    peak = lo + (int(np.argmax(windows)) + 4) * step
    inside = np.abs(level - peak) <= width
    return np.median(x[inside], axis=0), inside.sum() / x.shape[0]


@pytest.mark.parametrize("seed", [0, 1])
def test_masked_ratio_mode_equals_numpy(seed):
    nt, r = _strip(20 + seed, shape=(4, 300, 11, 3))
    mask = np.random.default_rng(seed).random(nt.shape[:-1]) < 0.7
    nt[0, 0, 0, 1] = -1.0  # a non-positive ratio in one band: the sample is not used
    gains, share = _fast.masked_ratio_mode(nt, r, mask, 0.05)
    expected, expected_share = _ratio_mode_numpy(nt, r, mask, 0.05)
    np.testing.assert_allclose(gains, expected, rtol=1e-12)
    assert share == pytest.approx(expected_share, rel=1e-12) and 0 < share < 1
    gains, share = _fast.masked_ratio_mode(nt, r, np.zeros_like(mask), 0.05)
    assert np.isnan(gains).all() and share == 0.0


def test_masked_ratio_mode_finds_the_empty_track_among_many_cars():
    """SYNTHETIC: a scene 0.8 times as bright as the reference, where 70 % of the samples
    are railcars of many colours (each 20 samples long) and 30 % the empty track with 3 %
    noise. The median ratio is pulled 4-15 % off in every band (measured 4.5, 6.8 and
    14.4 %); the mode is the empty
    track's, within 1 %. Its window holds the empty track's samples and a few cars whose
    colour happens to be near (measured share 0.340 against the empty track's 0.273)."""
    rng = np.random.default_rng(8)
    shape = (10, 600, 11, 3)
    r = rng.uniform(0.3, 0.5, shape)  # the empty track's texture
    nt = 0.8 * r * (1 + rng.normal(0, 0.03, shape))
    car = rng.random(shape[:2]) < 0.7
    car = np.repeat(car[:, ::20], 20, axis=1)  # 20 samples per car
    look = rng.uniform(0.15, 0.8, (shape[0], shape[1] // 20, 3))  # a colour per car
    nt[car] = np.repeat(look, 20, axis=1)[car][:, None, :] * (1 + rng.normal(0, 0.03, (1, 3)))
    mask = np.ones(shape[:-1], bool)
    median = _fast.masked_ratio_median(nt, r, mask)
    assert (np.abs(median / 0.8 - 1) > 0.04).all()
    gains, share = _fast.masked_ratio_mode(nt, r, mask, 0.05)
    np.testing.assert_allclose(gains, 0.8, rtol=0.01)
    empty = 1 - car.mean()
    assert empty <= share < empty + 0.1


def _ballast_share_numpy(colour, ref, w):
    """The share by least squares on the two cars' colours (numpy.linalg.lstsq)."""
    n_k, n_a, _ = colour.shape
    out = np.full((n_k, n_a), np.nan)
    for k in range(n_k):
        for a in range(n_a):
            if not (np.isfinite(colour[k, a]).all() and np.isfinite(ref[k, a]).all()):
                continue
            cars = []
            for near in (range(a - 1 - w, a - 1), range(a + 2, a + 2 + w)):
                q = [i for i in near if 0 <= i < n_a]
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    c = np.nanmedian(colour[k, q], axis=0) if q else np.full(3, np.nan)
                cars.append(c if np.isfinite(c).all() else None)
            if cars[0] is None and cars[1] is None:
                continue
            ca = cars[0] if cars[0] is not None else cars[1]
            cb = cars[1] if cars[1] is not None else cars[0]
            x, z, y = ref[k, a] - cb, ca - cb, colour[k, a] - cb
            if (z @ z) > 1e-12 and (x @ x) * (z @ z) - (x @ z) ** 2 > 0.1 * (x @ x) * (z @ z):
                out[k, a] = np.linalg.lstsq(np.stack([x, z], axis=1), y, rcond=None)[0][0]
                continue
            d = ref[k, a] - 0.5 * (ca + cb)
            if d @ d > 1e-12:
                out[k, a] = (colour[k, a] - 0.5 * (ca + cb)) @ d / (d @ d)
    return out


def test_ballast_share_equals_numpy():
    rng = np.random.default_rng(5)
    colour = rng.uniform(0.1, 0.9, (3, 80, 3))
    colour[0, 10:14] = np.nan  # unknown positions
    colour[1, 30, 2] = np.nan  # one band missing
    colour[2, 40:50] = colour[2, 39]  # one car colour on both sides: read against it alone
    ref = rng.uniform(0.3, 0.5, (3, 80, 3))
    colour, ref = colour.astype("float32"), ref.astype("float32")
    got = _fast.ballast_share(colour, ref, 3)
    expected = _ballast_share_numpy(colour.astype("float64"), ref.astype("float64"), 3)
    assert np.isnan(got[0, 10:14]).all() and np.isnan(got[1, 30])
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_allclose(
        got[np.isfinite(got)], expected[np.isfinite(expected)], rtol=1e-4, atol=1e-6
    )


def test_ballast_share_peaks_at_coupler_gaps_of_dark_and_bright_cars():
    """SYNTHETIC: ballast (0.40, 0.40, 0.38); cars of 16 samples, alternately dark (0.2 in
    every band, darker than the ballast) and rusty (0.6, 0.45, 0.35, brighter in red),
    with a coupler gap that fills half of one sample and none of the others. Read
    against the colours of the two cars beside it, the share is 0.5 at every gap (the
    gap's half of ballast), whichever side of the ballast the cars' colours lie, and no
    body reads as a gap. (Against the median of both sides together it read 1.02 and
    -0.02 by turns: that median is a mix of two cars' colours.)"""
    ballast = np.array([0.40, 0.40, 0.38])
    looks = [np.array([0.2, 0.2, 0.2]), np.array([0.6, 0.45, 0.35])]
    rows, gaps = [], []
    for i in range(8):
        car = np.tile(looks[i % 2], (16, 1))
        if i:
            car[0] = 0.5 * car[0] + 0.5 * ballast  # half the sample is the gap
            gaps.append(16 * i)
        rows.append(car)
    colour = np.concatenate(rows)[None].astype("float32")
    ref = np.tile(ballast, (1, colour.shape[1], 1)).astype("float32")
    share = _fast.ballast_share(colour, ref, 6)[0]
    np.testing.assert_allclose(share[gaps], 0.5, atol=0.02)
    body = np.ones(share.size, bool)
    for g in gaps:
        body[g - 2 : g + 3] = False
    # on the bodies no evidence of a gap (a window holding a gap may read negative)
    assert np.nanmax(share[body]) < 0.05 and np.nanmedian(np.abs(share[body])) < 0.01


def test_car_cuts_follow_strong_gaps_and_car_lengths():
    """The dynamic programme puts the cuts at the gaps when they are seen, splits by the
    mean car length when none is, ignores a strong mark that leaves no car-long piece,
    and finds no split for a run between one and two cars long."""
    step, lmin, lmax = 1.0, 12, 21
    lengths = [14, 17, 13, 19, 16]
    edges = np.cumsum([0, *lengths])
    score = np.full(edges[-1], -1.6)
    score[edges[1:-1]] = 3.0
    cuts = _fast.car_cuts(score, lmin, lmax, step, 15.2, 2.0)
    np.testing.assert_array_equal(cuts, edges)
    # no gap seen: three cars' length reads as three equal cars
    cuts = _fast.car_cuts(np.full(46, -1.6), lmin, lmax, step, 15.2, 2.0)
    assert cuts[0] == 0 and cuts[-1] == 46 and sorted(np.diff(cuts)) == [15, 15, 16]
    # a strong mark 6 m into a car (a flat car's load) cannot make a car-long piece
    score = np.full(32, -1.6)
    score[16], score[6] = 3.0, 6.0
    np.testing.assert_array_equal(_fast.car_cuts(score, lmin, lmax, step, 15.2, 2.0), [0, 16, 32])
    assert _fast.car_cuts(np.zeros(22), lmin, lmax, step, 15.2, 2.0).size == 0
