"""A local, stateful emulator of Anthropic's Message Batches API (docs/local.md)."""
