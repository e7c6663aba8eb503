"""Data: NIfTI files, label definitions, dataset layouts, preprocessing, slices in memory,
batched augmentation, and generated datasets."""
