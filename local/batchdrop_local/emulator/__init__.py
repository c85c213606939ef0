"""A local, stateful emulator of Anthropic's Message Batches API (README: The Message Batches emulator)."""
