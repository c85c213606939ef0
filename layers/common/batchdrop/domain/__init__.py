"""Pure domain logic: validating request lines, sharding them into batches, job identity
and status, token usage and cost, and the manifest. Standard library only; no I/O."""
