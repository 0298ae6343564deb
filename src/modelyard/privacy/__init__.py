"""Privacy: membership-inference audits of a trained run (audit.py)."""
