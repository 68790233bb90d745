"""Inference: applying a method to LR fields to get HR fields."""

from climai.inference.predict import bicubic_prediction, load_emulator, unet_prediction

__all__ = ["bicubic_prediction", "load_emulator", "unet_prediction"]
