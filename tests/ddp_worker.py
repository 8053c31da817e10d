"""Run by test_training under `accelerate launch --cpu --num_processes 2`: trains the tiny
tokenizer a few steps and writes each rank's model and codebook fingerprint."""

import hashlib
import sys
from pathlib import Path

import torch

import vtok
from vtok.tokenizers.train import TokenizerTrainer

config, run = sys.argv[1], Path(sys.argv[2])
cfg = vtok.load_config(config, ["train.steps=3", "train.save_every=100", "loss.disc_start=1"])
trainer = TokenizerTrainer(cfg, run, progress=False)
trainer.train()
model = trainer.accelerator.unwrap_model(trainer.model)
h = hashlib.sha256()
for name, tensor in sorted(model.state_dict().items()):
    h.update(name.encode() + tensor.detach().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
codebook = model.quantizer.vq.codebook
rank = trainer.accelerator.process_index
(run / f"rank{rank}.txt").write_text(f"{h.hexdigest()} {float(codebook.abs().sum()):.8f}\n")
