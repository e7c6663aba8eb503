"""Inference: a trained network applied to whole volumes, written back in the input's geometry."""
