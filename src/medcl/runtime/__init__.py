"""What training and inference share about the machine: device, threads, precision, random
state, processes (torchrun) and checkpoint files."""
