"""Model providers of the builder: what answers each turn of the agent loop."""
