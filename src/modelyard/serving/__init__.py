"""`modelyard serve`: the inference server (see app.py), its protocol (protocol.py) and dynamic batching."""
