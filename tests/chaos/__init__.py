"""The chaos suite: lease scenarios under injected faults, each checked by tests.history."""
