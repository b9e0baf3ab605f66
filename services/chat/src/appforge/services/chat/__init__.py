"""The chat service: apps, messages, one assistant message per execution."""
