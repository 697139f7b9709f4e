"""Low-rank, RSVD error and drift recorders on small models, against torch AdamW."""

import math

import pytest
import torch

from mlorc_lab.instrument.drift import DriftRecorder, projector_side
from mlorc_lab.instrument.low_rank import LowRankRecorder
from mlorc_lab.instrument.moments import moments_before_compression
from mlorc_lab.instrument.rsvd_error import RsvdErrorRecorder
from mlorc_lab.optim import MLorcAdamW


class ListWriter:
    def __init__(self):
        self.rows = []

    def write_many(self, records):
        self.rows.extend(records)

    def of_kind(self, kind):
        return [row for row in self.rows if row["kind"] == kind]


def small_model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(24, 16), torch.nn.Tanh(), torch.nn.Linear(16, 30))


def train(model, optimizer, steps, seed=1, before_step=None):
    generator = torch.Generator().manual_seed(seed)
    for step in range(1, steps + 1):
        inputs = torch.randn(8, 24, generator=generator)
        model(inputs).square().mean().backward()
        if before_step is not None:
            before_step(step)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def test_projector_side_follows_galore():
    assert projector_side((3, 5)) == "left"
    assert projector_side((5, 3)) == "right"
    assert projector_side((4, 4)) == "right"


def test_moments_before_compression_match_adamw():
    model = small_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.8, 0.99))
    weight = model[0].weight
    expected = {}

    def capture(step):
        expected[step] = moments_before_compression(optimizer, weight, 0.8, 0.99)

    train(model, optimizer, 3, before_step=capture)
    state = optimizer.state[weight]
    torch.testing.assert_close(expected[3]["exp_avg"], state["exp_avg"], rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(expected[3]["exp_avg_sq"], state["exp_avg_sq"], rtol=1e-6, atol=1e-12)


def test_moments_before_compression_match_full_rank_mlorc():
    # At rank min(m, n) the factors store m_t and v_t exactly (up to rounding).
    model = small_model()
    optimizer = MLorcAdamW(model.named_parameters(), lr=1e-2, betas=(0.8, 0.99), rank=16, compress=True)
    weight = model[0].weight
    expected = {}

    def capture(step):
        expected[step] = moments_before_compression(optimizer, weight, 0.8, 0.99)

    train(model, optimizer, 3, before_step=capture)
    assert optimizer.is_compressed(weight)
    torch.testing.assert_close(expected[3]["exp_avg"], optimizer.moment(weight, "exp_avg"), rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(expected[3]["exp_avg_sq"], optimizer.moment(weight, "exp_avg_sq"), rtol=1e-4, atol=1e-9)


def test_drift_shadow_equals_adamw_moment():
    model = small_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.8, 0.99))
    writer = ListWriter()
    recorder = DriftRecorder(model.named_parameters(), optimizer, writer, every=2, patterns=None, rank=3, refresh_every=3)
    train(model, optimizer, 7)
    recorder.remove()
    for name, param in model.named_parameters():
        if param.dim() == 2:
            torch.testing.assert_close(recorder.shadow[name], optimizer.state[param]["exp_avg"], rtol=1e-6, atol=1e-9)
    assert recorder.refresh_steps == [1, 4, 7]
    refreshes = writer.of_kind("projector_refresh")
    assert sorted({row["step"] for row in refreshes}) == [4, 7]
    drift = writer.of_kind("drift")
    # Due steps 1, 2, 4, 6 and refresh steps 1, 4, 7.
    assert sorted({row["step"] for row in drift}) == [1, 2, 4, 6, 7]
    assert {row["source"] for row in drift if row["method"] == "mlorc"} == {"rsvd_of_shadow"}
    for row in drift + refreshes:
        assert all(0.0 <= angle <= math.pi / 2 for angle in row["angles"])
    for row in drift:
        # Neither rank-3 approximation beats the exact rank-3 error (Eckart-Young).
        assert row["reconstruction_error"] >= row["best_error"] - 1e-6


def test_drift_at_refresh_step_one_is_gradient_subspace():
    # At step 1 the shadow moment is (1 - beta1) g_1, so GaLore's projector, built from
    # g_1, spans exactly its top-r subspace and its error equals the best error.
    model = small_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.8, 0.99))
    writer = ListWriter()
    with DriftRecorder(model.named_parameters(), optimizer, writer, every=5, patterns=None, rank=3, refresh_every=10):
        train(model, optimizer, 1)
    for row in writer.of_kind("drift"):
        if row["method"] == "galore":
            assert row["angle_max"] < 1e-5
            assert row["reconstruction_error"] == pytest.approx(row["best_error"], rel=1e-5)


def test_low_rank_recorder_rows_and_negative_v():
    model = small_model()
    optimizer = MLorcAdamW(model.named_parameters(), lr=1e-2, rank=2, oversampling=3, compress=True)
    writer = ListWriter()
    with LowRankRecorder(model.named_parameters(), optimizer, writer, every=2, patterns=None):
        train(model, optimizer, 4)
    rows = writer.of_kind("low_rank")
    # Steps 1, 2, 4 x two matrices x three quantities.
    assert len(rows) == 3 * 2 * 3
    for row in rows:
        assert 0.0 <= row["rho"] <= 1.0
        assert row["condition_applicable"] is True
        expected = (1 - 0.999) / (8 * 0.999 * math.sqrt(row["shape"][0] * row["shape"][1] * (1 + 2 / 2)))
        assert row["condition_threshold"] == pytest.approx(expected, rel=1e-12)
        assert row["condition_holds"] == (row["rho"] <= expected)
    negative = writer.of_kind("negative_v")
    assert sorted({row["step"] for row in negative}) == [2, 3, 4]
    for row in negative:
        assert 0.0 <= row["negative_fraction"] <= 1.0
        assert row["fill_value"] >= 0.0


def test_low_rank_condition_not_applicable_at_p0():
    model = small_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    writer = ListWriter()
    with LowRankRecorder(model.named_parameters(), optimizer, writer, every=1, patterns=None, rank=4, oversampling=0):
        train(model, optimizer, 1)
    rows = writer.of_kind("low_rank")
    assert rows
    assert all(row["condition_applicable"] is False and row["condition_holds"] is None for row in rows)
    with pytest.raises(ValueError, match="pass rank= and oversampling="):
        LowRankRecorder(model.named_parameters(), optimizer, writer, patterns=None)


def test_rsvd_error_recorder_on_real_moments():
    model = small_model()
    optimizer = MLorcAdamW(model.named_parameters(), lr=1e-2, rank=3, compress=True)
    writer = ListWriter()
    with RsvdErrorRecorder(model.named_parameters(), optimizer, writer, every=3, patterns=None, draws=3):
        train(model, optimizer, 3)
    rows = writer.of_kind("rsvd_error")
    assert len(rows) == 2 * 2 * 4 * 2  # steps 1, 3 x matrices x p x q
    for row in rows:
        assert row["bound_defined"] == (row["effective_oversampling"] >= 2)
        assert (row["bound"] is None) == (not row["bound_defined"])
        assert row["error_mean"] >= row["tail"] * (1 - 1e-6)


def test_removed_recorders_leave_training_unchanged():
    def final_weights(attach):
        model = small_model()
        optimizer = MLorcAdamW(model.named_parameters(), lr=1e-2, rank=3, compress=True)
        recorders = []
        if attach:
            writer = ListWriter()
            recorders = [
                DriftRecorder(model.named_parameters(), optimizer, writer, every=1, patterns=None, refresh_every=2),
                LowRankRecorder(model.named_parameters(), optimizer, writer, every=1, patterns=None),
                RsvdErrorRecorder(model.named_parameters(), optimizer, writer, every=2, patterns=None, draws=2),
            ]
        train(model, optimizer, 3)
        for recorder in recorders:
            recorder.remove()
        train(model, optimizer, 2, seed=2)
        return [param.detach().clone() for param in model.parameters()]

    plain = final_weights(False)
    recorded = final_weights(True)
    for expected, actual in zip(plain, recorded):
        assert torch.equal(expected, actual)
