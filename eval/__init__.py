"""Evaluation metrics for tokenizers: streaming objects with reset / update(real, fake) / compute()."""

from vtok.eval.psnr import PSNR, psnr_per_image

__all__ = ["PSNR", "psnr_per_image"]
