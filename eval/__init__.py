"""Evaluation: streaming image metrics, TokBench-style text and face fidelity, reports.

Importing this package registers its metrics, recognisers and face embedders;
heavy backends (Inception, rapidocr, dlib) load only when a metric is built.
"""

from vtok.eval import codebook, face, features, lpips, page_text, psnr, ssim, text  # noqa: F401  (registration)
from vtok.eval.metric import Metric, MetricUnavailable
from vtok.eval.psnr import PSNR, psnr_per_image
from vtok.eval.ssim import SSIM, ssim_per_image

__all__ = ["PSNR", "SSIM", "Metric", "MetricUnavailable", "psnr_per_image", "ssim_per_image"]
