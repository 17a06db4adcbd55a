"""What an acoustic model emits: characters (the default) or phones. Each inventory lists its
tokens (id 0 is CTC's blank), turns transcripts into target ids (None: cannot) and scores
greedy output on dev: word error rate for characters, phone error rate for phones."""
from __future__ import annotations

from streamrnn.phones import PhoneInventory
from streamrnn.tokens import ALPHABET, BLANK, decode, encode
from streamrnn.wer import ErrorRate, edit_distance

TARGET_KINDS = ("chars", "phones")


class CharInventory:
    kind = "chars"
    metric = "dev_wer"
    tokens = ("<blank>",) + tuple(ALPHABET)

    def encode(self, text: str) -> list[int]:
        return encode(text)

    def decode(self, ids) -> str:
        return decode(ids)

    def reference(self, text: str) -> str:
        return text

    def error_rate(self, pairs) -> float:
        """(reference text, hypothesis ids) pairs to the word error rate."""
        errors = ErrorRate()
        for reference, ids in pairs:
            errors.add(reference, decode(ids))
        return errors.wer


class PhoneTargets(PhoneInventory):
    metric = "dev_per"

    def reference(self, text: str) -> list[int] | None:
        return self.encode(text)

    def error_rate(self, pairs) -> float:
        """(reference ids, hypothesis ids) pairs to the phone error rate (boundaries not counted)."""
        errors = length = 0
        for reference, ids in pairs:
            reference = self.phone_ids(reference)
            errors += edit_distance(reference, self.phone_ids(ids))
            length += len(reference)
        return errors / max(length, 1)


def make_inventory(kind: str, boundary: bool = True, guess: bool = False):
    if kind == "chars":
        return CharInventory()
    if kind == "phones":
        return PhoneTargets(boundary=boundary, guess=guess)
    raise ValueError(f"targets must be one of {TARGET_KINDS}, got {kind!r}")


def greedy_ids(log_probs) -> list[int]:
    """Best token per step, repeats merged, blanks dropped."""
    best = log_probs.argmax(-1).tolist()
    return [t for i, t in enumerate(best) if t != BLANK and (i == 0 or t != best[i - 1])]
