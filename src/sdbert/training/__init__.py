"""Training: `loop.py` the one loop (Trainer, TrainingArguments), `setup.py` the data and model a run
starts from, `finetune.py` a teacher, `kd.py` distillation's losses, students and logit cache,
`distill.py` the distillation workflow."""
