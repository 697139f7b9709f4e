"""MLorcAdamW against torch.optim.AdamW, the negative-v fix by hand, and resume."""

import copy
import io

import pytest
import torch
from transformers import BertConfig, BertModel

from mlorc_lab.optim import MLorcAdamW
from mlorc_lab.optim.compression import fix_negative_entries


def small_transformer(dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    layer = torch.nn.TransformerEncoderLayer(d_model=16, nhead=2, dim_feedforward=24, dropout=0.0, batch_first=True)
    return torch.nn.Sequential(layer, torch.nn.Linear(16, 3)).to(dtype)


def small_mlp(dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(16, 24), torch.nn.LayerNorm(24), torch.nn.GELU(), torch.nn.Linear(24, 3)
    ).to(dtype)


def full_rank_groups(model):
    """One group per parameter: matrices forced through the compressed path at r = min(m, n)."""
    groups = []
    for param in model.parameters():
        if param.dim() >= 2:
            groups.append(dict(params=[param], rank=min(param.shape), compress=True))
        else:
            groups.append(dict(params=[param]))
    return groups


def loss_of(model, inputs):
    return model(inputs).square().mean()


# Tolerances: the runs differ from AdamW only by the rounding of QR, SVD and the
# rebuild, about 1e-7 of the largest entry of v in fp32 and 1e-16 in fp64. The
# transformer runs in fp64 because attention gives some weights gradients near zero
# (the key projection), where v is far below fp32 rounding of the largest v and
# m / sqrt(v) then depends on that rounding; the fp32 check uses an MLP instead, and
# its tolerance is 2e-4, 1e-3 of the distance 20 steps of lr 1e-2 can move a
# weight (0.2), since entries with small v still amplify the rounding of the rebuild
# (measured: 6e-5 on the reference path, 8.5e-5 on the fast path).
@pytest.mark.parametrize(
    ("make_model", "dtype", "atol"),
    [(small_transformer, torch.float64, 1e-11), (small_mlp, torch.float32, 2e-4)],
)
def test_full_rank_matches_adamw_every_step(make_model, dtype, atol):
    model = make_model(dtype)
    reference = copy.deepcopy(model)
    optimizer = MLorcAdamW(full_rank_groups(model), lr=1e-2, betas=(0.8, 0.999), weight_decay=0.1)
    reference_optimizer = torch.optim.AdamW(reference.parameters(), lr=1e-2, betas=(0.8, 0.999), weight_decay=0.1)
    generator = torch.Generator().manual_seed(1)
    compressed = [p for p in model.parameters() if p.dim() >= 2]
    for step in range(20):
        inputs = torch.randn(4, 5, 16, generator=generator, dtype=dtype)
        inputs = inputs if make_model is small_transformer else inputs[:, 0]
        for net, opt in ((model, optimizer), (reference, reference_optimizer)):
            opt.zero_grad()
            loss_of(net, inputs).backward()
            opt.step()
        for param, expected in zip(model.parameters(), reference.parameters()):
            torch.testing.assert_close(param, expected, rtol=0, atol=atol, msg=f"step {step + 1}")
    assert all(optimizer.is_compressed(p) for p in compressed)


def test_negative_v_fix_by_hand():
    # Negative entries -0.2 and -0.4: their mean absolute value 0.3 replaces both.
    rebuilt = torch.tensor([[0.5, -0.2], [-0.4, 0.1]])
    fixed, fraction, fill = fix_negative_entries(rebuilt.clone())
    torch.testing.assert_close(fixed, torch.tensor([[0.5, 0.3], [0.3, 0.1]]))
    assert fraction.item() == pytest.approx(0.5)
    assert fill.item() == pytest.approx(0.3)


def test_negative_v_fix_without_negatives_is_identity():
    rebuilt = torch.tensor([[0.5, 0.0], [0.4, 0.1]])
    fixed, fraction, fill = fix_negative_entries(rebuilt.clone())
    assert torch.equal(fixed, rebuilt)
    assert fraction.item() == 0.0
    assert fill.item() == 0.0


def test_second_step_uses_fixed_v_by_hand():
    # Rank-1 factors whose rebuild has a negative entry; the step must use the fixed v.
    param = torch.nn.Parameter(torch.zeros(2, 2, dtype=torch.float64))
    optimizer = MLorcAdamW([param], lr=1.0, betas=(0.5, 0.5), eps=0.0, weight_decay=0.0, rank=1, compress=True)
    state = optimizer.state[param]
    optimizer._init_state(optimizer.param_groups[0], param)
    state["step"] = 1
    u = torch.tensor([[1.0], [-1.0]], dtype=torch.float64) / 2**0.5
    v = torch.tensor([[1.0], [1.0]], dtype=torch.float64) / 2**0.5
    state["exp_avg_sq_U"], state["exp_avg_sq_S"], state["exp_avg_sq_V"] = u, torch.tensor([0.4], dtype=torch.float64), v
    # Rebuilt v = 0.2 * [[1, 1], [-1, -1]]; fixed v = [[0.2, 0.2], [0.2, 0.2]].
    param.grad = torch.full((2, 2), 2.0, dtype=torch.float64)
    optimizer.step()
    # m_2 = 0.5 * 0 + 0.5 * 2 = 1; v_2 = 0.5 * 0.2 + 0.5 * 4 = 2.1;
    # step = m_2 / (1 - 0.25) / sqrt(v_2 / (1 - 0.25)).
    expected = -(1.0 / 0.75) / (2.1 / 0.75) ** 0.5
    torch.testing.assert_close(param.detach(), torch.full((2, 2), expected, dtype=torch.float64))
    assert state["negative_v_fraction"].item() == pytest.approx(0.5)
    assert state["negative_v_fill"].item() == pytest.approx(0.2)


def tiny_bert(seed=0):
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=20,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=48,
        max_position_embeddings=8,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return BertModel(config)


def bert_batch(seed=0):
    generator = torch.Generator().manual_seed(seed)
    # Every token id, both segment ids and every position occur, so every embedding row
    # gets a gradient.
    input_ids = torch.arange(20).reshape(5, 4).repeat(1, 2)
    input_ids = input_ids[:, torch.randperm(8, generator=generator)]
    token_type_ids = torch.tensor([[0] * 4 + [1] * 4] * 5)
    return dict(input_ids=input_ids, token_type_ids=token_type_ids)


def bert_loss(model, batch):
    return model(**batch).last_hidden_state.square().mean() + model(**batch).pooler_output.sum()


def test_every_parameter_changes_after_one_step():
    model = tiny_bert()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = MLorcAdamW(model.named_parameters(), lr=1e-3, weight_decay=0.0, rank=4)
    bert_loss(model, bert_batch()).backward()
    optimizer.step()
    unchanged = [name for name, p in model.named_parameters() if torch.equal(p, before[name])]
    assert unchanged == []
    compressed = [name for name, p in model.named_parameters() if optimizer.is_compressed(p)]
    assert "encoder.layer.0.attention.self.query.weight" in compressed
    assert "embeddings.word_embeddings.weight" in compressed
    assert "embeddings.token_type_embeddings.weight" not in compressed  # 2 x 32 at rank 4: dense by the size rule
    assert "embeddings.LayerNorm.weight" not in compressed


def run_steps(model, optimizer, first, last):
    for step in range(first, last):
        optimizer.zero_grad()
        bert_loss(model, bert_batch(seed=step)).backward()
        optimizer.step()


def test_resume_from_weights_only_checkpoint_is_exact():
    def make():
        model = tiny_bert()
        return model, MLorcAdamW(model.parameters(), lr=1e-3, rank=3, oversampling=2, seed=11)

    model, optimizer = make()
    run_steps(model, optimizer, 0, 6)

    interrupted, interrupted_optimizer = make()
    run_steps(interrupted, interrupted_optimizer, 0, 3)
    buffer = io.BytesIO()
    torch.save({"model": interrupted.state_dict(), "optimizer": interrupted_optimizer.state_dict()}, buffer)
    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=True)

    resumed, resumed_optimizer = make()
    resumed.load_state_dict(checkpoint["model"])
    resumed_optimizer.load_state_dict(checkpoint["optimizer"])
    run_steps(resumed, resumed_optimizer, 3, 6)
    for (name, param), expected in zip(resumed.named_parameters(), model.parameters()):
        assert torch.equal(param, expected), name


def test_state_dtypes_survive_load_for_half_parameters():
    param = torch.nn.Parameter(torch.randn(16, 12, dtype=torch.bfloat16))
    optimizer = MLorcAdamW([param], rank=2)
    param.grad = torch.randn(16, 12, dtype=torch.bfloat16)
    optimizer.step()
    state_dict = optimizer.state_dict()
    fresh = MLorcAdamW([param], rank=2)
    fresh.load_state_dict(state_dict)
    assert fresh.state[param]["exp_avg_U"].dtype == torch.float32
    assert fresh.state[param]["rng_state"].dtype == torch.uint8


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(lr=-1.0), "Invalid learning rate: -1.0"),
        (dict(betas=(1.0, 0.999)), "Invalid beta parameter at index 0: 1.0"),
        (dict(betas=(0.9, -0.1)), "Invalid beta parameter at index 1: -0.1"),
        (dict(eps=-1e-8), "Invalid epsilon value"),
        (dict(rank=0), "Invalid rank: 0"),
        (dict(oversampling=-1), "Invalid oversampling: -1"),
        (dict(power_iterations=-1), "Invalid power_iterations: -1"),
        (dict(weight_decay=-0.1), "Invalid weight_decay value: -0.1"),
        (dict(state_dtype="float8"), "Invalid state_dtype: 'float8'"),
        (dict(rank=9, compress=True), "Invalid rank: 9 exceeds min"),
    ],
)
def test_invalid_options_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MLorcAdamW([torch.nn.Parameter(torch.zeros(8, 10))], **kwargs)


def test_moment_rebuilds_stored_factors():
    param = torch.nn.Parameter(torch.zeros(12, 10, dtype=torch.float64))
    optimizer = MLorcAdamW([param], rank=10, compress=True, betas=(0.5, 0.9))
    gradient = torch.randn(12, 10, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    param.grad = gradient
    optimizer.step()
    torch.testing.assert_close(optimizer.moment(param, "exp_avg"), 0.5 * gradient, rtol=0, atol=1e-12)
    torch.testing.assert_close(optimizer.moment(param, "exp_avg_sq"), 0.1 * gradient**2, rtol=0, atol=1e-12)
