"""The method: loss terms, image mixing, anatomy-distribution clustering, and the training
objectives that combine them (pCE baseline, MedCL)."""
