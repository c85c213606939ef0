"""Everything batchdrop runs on a laptop or in CI, never in Lambda: the Message Batches
emulator, the local stack and the `batchdrop` command."""
