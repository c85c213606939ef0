"""The demo's keyword responder labels reviews by the words that tell."""

import json

import pytest

from batchdrop.domain.schemas import validate
from batchdrop_local.demo_responder import classify_review
from tests.records_jobs import SENTIMENT


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


# --- structured answers: records mode's pipeline asks for JSON that follows a schema ---


def _structured(text: str, schema: dict = SENTIMENT) -> dict:
    params = _params(text) | {"output_config": {"format": {"type": "json_schema", "schema": schema}}}
    return json.loads(classify_review(params, "review-1"))


@pytest.mark.parametrize(
    ("review", "answer"),
    [
        (
            "Absolutely love it, the best I have owned",
            {"sentiment": "positive", "confidence": 0.75, "reason": "positive words: best, love"},
        ),
        (
            "Terrible. It broke",
            {"sentiment": "negative", "confidence": 0.75, "reason": "negative words: broke, terrible"},
        ),
        (
            "It arrived on Tuesday in a box",
            {"sentiment": "mixed", "confidence": 0.3, "reason": "no telling words found"},
        ),
        (
            "Great look but it broke and cracked",
            {
                "sentiment": "mixed",
                "confidence": 0.6,
                "reason": "positive words: great; negative words: broke, cracked",
            },
        ),
        (
            "excellent incredible love best great",
            {
                "sentiment": "positive",
                "confidence": 0.95,
                "reason": "positive words: best, excellent, great, incredible, love",
            },
        ),
    ],
)
def test_a_schema_request_is_answered_with_json_from_the_words_that_conforms(review: str, answer: dict) -> None:
    got = _structured(f"Review of a kettle:\n\n{review}")
    assert got == answer
    assert validate(got, SENTIMENT) is None


def test_the_sentiment_follows_the_schema_enum_and_other_properties_are_drawn_to_conform() -> None:
    schema = {
        "type": "object",
        "properties": {
            "sentiment": {"type": "string", "enum": ["POSITIVE", "NEGATIVE", "NEUTRAL"]},
            "confidence": {"type": "integer"},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1},
            "reason": {"type": "string"},
        },
        "required": ["sentiment", "confidence", "tags", "reason"],
        "additionalProperties": False,
    }
    # words both ways: mixed, which this enum spells NEUTRAL; an integer confidence is drawn
    got = _structured("great but broke", schema)
    assert got["sentiment"] == "NEUTRAL"
    assert got["reason"] == "positive words: great; negative words: broke"
    assert isinstance(got["confidence"], int)
    assert validate(got, schema) is None
    assert got == _structured("great but broke", schema)  # the same request, the same answer
    # an enum with no label for the reading: a value of the enum, still conforming
    schema["properties"]["sentiment"]["enum"] = ["good", "bad"]
    got = _structured("great", schema)
    assert got["sentiment"] in ("good", "bad")
    assert validate(got, schema) is None


def test_text_blocks_are_read_as_the_review() -> None:
    params = _params("")
    params["messages"][0]["content"] = [{"type": "text", "text": "Review: terrible, cheap"}]
    assert classify_review(params, "review-1") == "NEGATIVE"
