"""MLorcAdamW passed to the Hugging Face Trainer through optimizers=(optimizer, scheduler)."""

from __future__ import annotations

import torch
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments
from transformers.optimization import get_linear_schedule_with_warmup

from mlorc_lab.optim import MLorcAdamW

RANK = 4
MAX_STEPS = 3


class TinyClassificationData(torch.utils.data.Dataset):
    """Random token ids with binary labels: the test is about the Trainer wiring."""

    def __init__(self, size=24, length=12, vocab_size=100, seed=0):
        generator = torch.Generator().manual_seed(seed)
        self.input_ids = torch.randint(1, vocab_size, (size, length), generator=generator)
        self.labels = torch.randint(0, 2, (size,), generator=generator)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return {
            "input_ids": self.input_ids[index],
            "attention_mask": torch.ones_like(self.input_ids[index]),
            "labels": self.labels[index],
        }


def test_trainer_steps_mlorc_adamw(tmp_path):
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=2,
    )
    model = BertForSequenceClassification(config)
    before = {name: param.detach().clone() for name, param in model.named_parameters()}
    optimizer = MLorcAdamW(model.named_parameters(), lr=1e-3, rank=RANK)
    scheduler = get_linear_schedule_with_warmup(optimizer, num_warmup_steps=1, num_training_steps=MAX_STEPS)
    args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=MAX_STEPS,
        per_device_train_batch_size=8,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        seed=0,
    )
    trainer = Trainer(model=model, args=args, train_dataset=TinyClassificationData(), optimizers=(optimizer, scheduler))
    trainer.train()

    assert trainer.state.global_step == MAX_STEPS
    named = dict(model.named_parameters())
    for name, param in named.items():
        assert not torch.equal(param, before[name]), name
        assert optimizer.state[param]["step"] == MAX_STEPS, name

    # Matrices whose rank-4 factors are smaller than the matrix are compressed, the
    # rest (vectors, the 2 x 32 token-type embedding and classifier) keep dense state.
    compressed = {name for name, param in named.items() if optimizer.is_compressed(param)}
    expected = {
        name
        for name, param in named.items()
        if param.dim() == 2 and RANK * (sum(param.shape) + 1) < param.numel()
    }
    assert compressed == expected
    assert "bert.embeddings.word_embeddings.weight" in compressed
    assert "bert.encoder.layer.0.attention.self.query.weight" in compressed
    assert "classifier.weight" not in compressed
    word_state = optimizer.state[named["bert.embeddings.word_embeddings.weight"]]
    assert word_state["exp_avg_U"].shape == (100, RANK)
    assert word_state["exp_avg_V"].shape == (32, RANK)
    # The scheduler has reached the end of its linear decay.
    assert optimizer.param_groups[0]["lr"] == 0.0
