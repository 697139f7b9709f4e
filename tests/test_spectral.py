"""Spectrum summaries by hand, and the spectrum recorder against torch.linalg.svdvals."""

import math

import pytest
import torch

from mlorc_lab.instrument.spectra import SpectrumRecorder, matrix_type, select_matrices
from mlorc_lab.optim import MLorcAdamW
from mlorc_lab.spectral import effective_rank, energy_ratio, tail_norm, top_k_ratio


def test_top_k_ratio_by_hand():
    assert top_k_ratio([4.0, 3.0, 2.0, 1.0], k=2) == pytest.approx(0.7)
    assert top_k_ratio([1.0, 2.0, 3.0, 4.0], k=2) == pytest.approx(0.7)  # order does not matter
    assert energy_ratio([4.0, 3.0, 2.0, 1.0], k=2) == pytest.approx(25.0 / 30.0)
    assert math.isnan(top_k_ratio([0.0, 0.0]))


def test_effective_rank_and_tail_by_hand():
    assert effective_rank([5.0]) == pytest.approx(1.0)
    assert effective_rank([2.0, 2.0, 2.0, 2.0]) == pytest.approx(4.0)
    assert tail_norm([4.0, 3.0, 2.0, 1.0], rank=2) == pytest.approx(math.sqrt(5.0))


def test_invalid_spectrum_raises():
    with pytest.raises(ValueError, match="must be >= 0"):
        top_k_ratio([1.0, -1.0])
    with pytest.raises(ValueError, match="Invalid k: 0"):
        top_k_ratio([1.0], k=0)


def test_matrix_type_of_bert_names():
    assert matrix_type("bert.encoder.layer.3.attention.self.query.weight") == "query"
    assert matrix_type("bert.encoder.layer.3.attention.output.dense.weight") == "attention_output"
    assert matrix_type("bert.encoder.layer.3.output.dense.weight") == "ffn_out"
    assert matrix_type("bert.encoder.layer.3.intermediate.dense.weight") == "ffn_in"
    assert matrix_type("bert.encoder.layer.3.attention.output.LayerNorm.weight") is None


class ListWriter:
    def __init__(self):
        self.records = []

    def write_many(self, records):
        self.records.extend(records)


def linear_stack():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(12, 10), torch.nn.Tanh(), torch.nn.Linear(10, 6))


@pytest.mark.parametrize("optimizer_class", [torch.optim.AdamW, MLorcAdamW])
def test_recorder_spectra_match_svdvals(optimizer_class):
    model = linear_stack()
    kwargs = dict(rank=6, compress=True) if optimizer_class is MLorcAdamW else {}
    optimizer = optimizer_class(model.parameters(), lr=1e-2, **kwargs)
    writer = ListWriter()
    recorder = SpectrumRecorder(model.named_parameters(), optimizer, writer, every=2, patterns=None)
    inputs = torch.randn(16, 12, generator=torch.Generator().manual_seed(1))
    expected = {}
    for step in range(1, 5):
        optimizer.zero_grad()
        model(inputs).square().mean().backward()
        expected[(step, "grad")] = torch.linalg.svdvals(model[2].weight.grad)
        optimizer.step()
        moment = optimizer.moment(model[2].weight, "exp_avg") if optimizer_class is MLorcAdamW else optimizer.state[model[2].weight]["exp_avg"]
        expected[(step, "exp_avg")] = torch.linalg.svdvals(moment)
    recorder.remove()
    steps = sorted({record["step"] for record in writer.records})
    assert steps == [1, 2, 4]
    for record in writer.records:
        key = (record["step"], record["quantity"])
        if record["matrix"] == "2.weight" and key in expected:
            # Spectra are stored with 6 significant digits.
            torch.testing.assert_close(torch.tensor(record["singular_values"]), expected[key], rtol=1e-5, atol=1e-7)
    assert len(writer.records) == 3 * 3 * 2  # 3 steps x 3 quantities x 2 matrices


def test_removed_recorder_writes_nothing():
    model = linear_stack()
    optimizer = torch.optim.AdamW(model.parameters())
    writer = ListWriter()
    SpectrumRecorder(model.named_parameters(), optimizer, writer, every=1, patterns=None).remove()
    model(torch.ones(2, 12)).sum().backward()
    optimizer.step()
    assert writer.records == []


def test_recorder_rejects_bad_options():
    model = linear_stack()
    optimizer = torch.optim.AdamW(model.parameters())
    with pytest.raises(ValueError, match="Invalid every: 0"):
        SpectrumRecorder(model.named_parameters(), optimizer, ListWriter(), every=0, patterns=None)
    with pytest.raises(ValueError, match="Unknown quantities"):
        SpectrumRecorder(model.named_parameters(), optimizer, ListWriter(), quantities=("hessian",), patterns=None)
    with pytest.raises(ValueError, match="No trainable matrix parameter"):
        select_matrices(model.named_parameters())  # encoder patterns match nothing here
