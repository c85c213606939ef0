"""The emulator's ids: base-58 digits taken two at a time are the digits one at a time."""

from hypothesis import given
from hypothesis import strategies as st

from batchdrop_local.emulator.wire import _BASE58, _base58, derived_id


def _digit_by_digit(data: bytes, length: int) -> str:
    number = int.from_bytes(data, "big")
    chars = []
    for _ in range(length):
        number, digit = divmod(number, 58)
        chars.append(_BASE58[digit])
    return "".join(chars)


@given(data=st.binary(min_size=0, max_size=40), length=st.integers(min_value=0, max_value=40))
def test_base58_keeps_the_lowest_digits_lowest_first(data: bytes, length: int) -> None:
    assert _base58(data, length) == _digit_by_digit(data, length)


def test_a_derived_id_is_stable_and_shaped_like_the_apis() -> None:
    message_id = derived_id("msg_", 0, "msgbatch_01abc", "req-1")
    assert message_id == derived_id("msg_", 0, "msgbatch_01abc", "req-1")
    assert message_id.startswith("msg_01")
    assert len(message_id) == len("msg_01") + 22
    assert set(message_id[len("msg_01") :]) <= set(_BASE58)
