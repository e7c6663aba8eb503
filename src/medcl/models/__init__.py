"""Segmentation networks: every model maps ``(B, C, H, W)`` images to ``(B, K, H, W)`` logits."""

from .registry import MODEL_REGISTRY, SAM_MODELS, build_model, rebuild_model
from .unet import UNet

__all__ = ["MODEL_REGISTRY", "SAM_MODELS", "UNet", "build_model", "rebuild_model"]
