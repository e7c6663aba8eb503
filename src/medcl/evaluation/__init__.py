"""Evaluation: per-case metrics (Dice, HD95, ASSD), folder summaries and overlay images."""
