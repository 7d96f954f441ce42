"""Grammar for messages: "1 class" and "3 classes", "a float32" and "an int64".

>>> count(1, "class"), count(3, "class"), count(60000, "image", thousands=True)
('1 class', '3 classes', '60,000 images')
>>> a("int"), a("8-D"), a("uint8"), a("4-D")
('an int', 'an 8-D', 'a uint8', 'a 4-D')
"""

from __future__ import annotations

__all__ = ["count", "a"]

# Words that start with a vowel letter but sound as "you" or "one": they take "a"; words that
# start with a consonant letter but a vowel sound: "an".
_SOUNDS_LIKE_YOU = ("uint", "uni", "use", "usu", "uti", "eu", "one")
_SOUNDS_LIKE_A_VOWEL = ("nd", "hour", "honest")


def count(number: int, noun: str, plural: str | None = None, *, thousands: bool = False) -> str:
    """``number`` and ``noun``, in the plural unless the number is 1; ``thousands``: the number
    with thousands separators ("60,000 images").

    The plural is ``plural`` if given, else the noun with "es" after s, x, z and sh
    ("classes"), "ies" for a consonant then y ("entries"), else "s" ("epochs"; give
    ``plural="batches"`` where ch sounds as in "batch").
    """
    if number == 1:
        return f"1 {noun}"
    if plural is None:
        if noun.endswith(("s", "x", "z", "sh")):
            plural = noun + "es"
        elif noun.endswith("y") and noun[-2:-1] not in ("a", "e", "i", "o", "u"):
            plural = noun[:-1] + "ies"
        else:
            plural = noun + "s"
    return f"{number:,} {plural}" if thousands else f"{number} {plural}"


def a(word) -> str:
    """``word`` after its indefinite article, chosen by sound: "an int", "an 8-D", "an 11x11",
    "a uint8", "a 4-D", "a float32", "an ndarray", "an SGD", "a ReLU"."""
    text = str(word)
    lower = text.lower()
    if lower[:1].isdigit():
        digits = lower[:len(lower) - len(lower.lstrip("0123456789"))]
        # eight..., eighty..., eleven, eighteen (and their thousands, millions)
        vowel = digits[0] == "8" or (len(digits) % 3 == 2 and digits[:2] in ("11", "18"))
    elif text[:2].isupper() and text.isalnum():  # an acronym, spelt out: an NCHW, an SGD
        vowel = text[0] in "AEFHILMNORSX"
    else:
        vowel = (lower[:1] in ("a", "e", "i", "o", "u") and not lower.startswith(_SOUNDS_LIKE_YOU)
                 or lower.startswith(_SOUNDS_LIKE_A_VOWEL))
    return f"{'an' if vowel else 'a'} {text}"
