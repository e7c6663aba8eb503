"""Evaluation: per-case metrics (Dice, HD95, ASSD), folder summaries, overlay images and the
HTML report."""
