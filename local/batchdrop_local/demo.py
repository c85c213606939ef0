"""`make demo`: the Message Batches emulator and one batch of product reviews sent through
the official `anthropic` SDK, from create to results, exactly as against the real API."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import anthropic

from batchdrop_local.emulator.server import Emulator
from batchdrop_local.emulator.settings import EmulatorSettings

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "reviews.jsonl"


def main() -> int:
    requests = [json.loads(line) for line in SAMPLE.read_text().splitlines() if line.strip()]
    reviews = {r["custom_id"]: r["params"]["messages"][0]["content"].removeprefix("Review: ") for r in requests}
    settings = EmulatorSettings(port=0, latency=3.0, responder="batchdrop_local.demo_responder:classify_review")
    with Emulator(settings) as emulator:
        print(f"Message Batches emulator on {emulator.url}: answers come from a keyword responder, not Claude.")
        client = anthropic.Anthropic(base_url=emulator.url, api_key="demo-key", max_retries=0)
        batch = client.messages.batches.create(requests=requests)
        print(f"created {batch.id} with {batch.request_counts.processing} requests ({SAMPLE.name})")
        started = time.monotonic()
        while batch.processing_status != "ended":
            print(f"\r  {batch.processing_status}, {time.monotonic() - started:4.1f} s", end="", flush=True)
            time.sleep(0.25)
            batch = client.messages.batches.retrieve(batch.id)
        counts = batch.request_counts
        print(
            f"\rended after {time.monotonic() - started:.1f} s: {counts.succeeded} succeeded, "
            f"{counts.errored} errored, {counts.canceled} canceled, {counts.expired} expired"
        )
        rows = sorted(client.messages.batches.results(batch.id), key=lambda row: row.custom_id)
        client.close()
    print()
    print(f"{'custom_id':<12} {'answer':<9} {'in':>4} {'out':>4}  review")
    tokens_in = tokens_out = 0
    for row in rows:
        if row.result.type != "succeeded":
            print(f"{row.custom_id:<12} {row.result.type:<9}")
            continue
        message = row.result.message
        answer = "".join(block.text for block in message.content if block.type == "text")
        tokens_in += message.usage.input_tokens
        tokens_out += message.usage.output_tokens
        review = reviews[row.custom_id]
        print(
            f"{row.custom_id:<12} {answer:<9} {message.usage.input_tokens:>4} {message.usage.output_tokens:>4}  "
            f"{review[:60] + ('...' if len(review) > 60 else '')}"
        )
    print(f"\n{len(rows)} results, {tokens_in} input and {tokens_out} output tokens.")
    print("Against the real API: the same code with ANTHROPIC_API_KEY set and no base_url.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
