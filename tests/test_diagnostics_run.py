"""Text data reading and matrix-name selection of the diagnostics runner."""

import json

import pytest
import torch

from mlorc_lab.diagnostics.run import DECODER_MATRIX_PATTERNS, choose_patterns, read_text_documents
from mlorc_lab.instrument.spectra import ENCODER_MATRIX_PATTERNS


def test_read_text_documents_txt_and_jsonl(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("first line\n\nsecond line\n", encoding="utf-8")
    assert read_text_documents(text) == ["first line", "second line"]
    lines = tmp_path / "notes.jsonl"
    lines.write_text(json.dumps({"text": "a"}) + "\n" + json.dumps({"text": "b", "id": 2}) + "\n", encoding="utf-8")
    assert read_text_documents(lines) == ["a", "b"]


def test_read_text_documents_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="Text data file not found"):
        read_text_documents(tmp_path / "missing.txt")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"body": "a"}) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 1: expected a JSON object with a string 'text' field"):
        read_text_documents(bad)
    csv = tmp_path / "data.csv"
    csv.write_text("a,b\n", encoding="utf-8")
    with pytest.raises(ValueError, match="Unsupported text data file"):
        read_text_documents(csv)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    with pytest.raises(ValueError, match="contains no documents"):
        read_text_documents(empty)


def nested(names):
    """Return a module whose parameter names are ``<name>.weight`` for each dotted name."""
    root = torch.nn.Module()
    for name in names:
        parent = root
        parts = name.split(".")
        for part in parts[:-1]:
            if not hasattr(parent, part):
                parent.add_module(part, torch.nn.Module())
            parent = getattr(parent, part)
        parent.add_module(parts[-1], torch.nn.Linear(4, 4, bias=False))
    return root


def test_choose_patterns_by_model_names():
    encoder = nested(["encoder.layer.0.attention.self.query", "encoder.layer.0.intermediate.dense"])
    assert choose_patterns(encoder) is ENCODER_MATRIX_PATTERNS
    decoder = nested(["model.layers.0.self_attn.q_proj", "model.layers.0.mlp.up_proj"])
    assert choose_patterns(decoder) is DECODER_MATRIX_PATTERNS
    with pytest.raises(ValueError, match="pass patterns="):
        choose_patterns(nested(["blocks.0.attn.c_attn"]))
