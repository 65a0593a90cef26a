"""decrypt_bytes on random and mutated ciphertexts: the exact plaintext or IntegrityError, nothing else."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from percept_core import IntegrityError, decrypt_bytes, derive_key, encrypt_bytes

KEY = derive_key("property-test-key")
OTHER_KEY = derive_key("another-version-key")
FAST = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def outcome(ciphertext: bytes, key=KEY) -> bytes | IntegrityError:
    try:
        return decrypt_bytes(ciphertext, key)
    except IntegrityError as exc:  # anything else escapes and fails the test
        return exc


@FAST
@given(st.binary(max_size=4096))
def test_random_bytes_never_decrypt(data):
    assert isinstance(outcome(data), IntegrityError)


@FAST
@given(st.binary(max_size=3000))
def test_round_trip_is_exact(plaintext):
    assert decrypt_bytes(encrypt_bytes(plaintext, KEY), KEY) == plaintext


@FAST
@given(st.binary(max_size=2000), st.data())
def test_any_change_to_a_ciphertext_is_refused(plaintext, data):
    ciphertext = encrypt_bytes(plaintext, KEY)
    kind = data.draw(st.sampled_from(["flip", "truncate", "extend", "splice", "replace-block"]))
    mutated = bytearray(ciphertext)
    if kind == "flip":
        index = data.draw(st.integers(0, len(mutated) - 1))
        mutated[index] ^= data.draw(st.integers(1, 255))
    elif kind == "truncate":
        del mutated[data.draw(st.integers(0, len(mutated) - 1)) :]
    elif kind == "extend":
        mutated += data.draw(st.binary(min_size=1, max_size=64))
    elif kind == "splice":
        start = data.draw(st.integers(0, len(mutated) - 1))
        mutated[start:start] = data.draw(st.binary(min_size=1, max_size=32))
    else:
        start = data.draw(st.integers(0, len(mutated) - 1))
        block = data.draw(st.binary(min_size=1, max_size=48))
        if bytes(mutated[start : start + len(block)]) == block:
            return  # an identity change proves nothing
        mutated[start : start + len(block)] = block
    result = outcome(bytes(mutated))
    if bytes(mutated) == ciphertext:
        assert result == plaintext
    else:
        assert isinstance(result, IntegrityError), kind


@FAST
@given(st.binary(max_size=2000))
def test_another_versions_key_is_refused(plaintext):
    assert isinstance(outcome(encrypt_bytes(plaintext, KEY), OTHER_KEY), IntegrityError)
