"""A local, stateful emulator of Anthropic's Message Batches API (see docs/emulator.md)."""
