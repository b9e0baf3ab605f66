"""The three appforge services and what they share."""
