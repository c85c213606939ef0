"""The demo's keyword responder labels reviews by the words that tell."""

import pytest

from batchdrop_local.demo_responder import classify_review


def _params(text: str) -> dict:
    return {"model": "claude-haiku-4-5", "max_tokens": 5, "messages": [{"role": "user", "content": text}]}


@pytest.mark.parametrize(
    ("review", "label"),
    [
        ("Absolutely love it, the best I have owned", "POSITIVE"),
        ("Terrible. It broke and I am disappointed", "NEGATIVE"),
        ("It arrived on Tuesday in a box", "NEUTRAL"),
        ("Great look but it broke and cracked", "NEGATIVE"),
    ],
)
def test_review_is_labelled_by_its_telling_words(review: str, label: str) -> None:
    assert classify_review(_params(f"Review: {review}"), "review-1") == label
