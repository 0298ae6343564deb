"""Magnitude pruning (torch.nn.utils.prune) and structured pruning with a short recovery fine-tune."""
