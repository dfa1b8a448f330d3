"""Class labels as prompts: ``"a photo of an airplane"``, with the right indefinite article."""

from __future__ import annotations

import sfumato

#: Words that start with a vowel letter but a consonant sound, and the reverse.
_CONSONANT_SOUND = ("uni", "use", "usu", "eu", "one", "ewe")
_VOWEL_SOUND = ("hour", "honest", "honor", "honour", "heir")


def article(noun: str) -> str:
    """``"an"`` before a vowel sound (``an airplane``, ``an hour``), else ``"a"`` (``a unicorn``)."""
    word = noun.strip().lower()
    if word.startswith(_VOWEL_SOUND):
        return "an"
    if word.startswith(_CONSONANT_SOUND):
        return "a"
    return "an" if word[:1] in ("a", "e", "i", "o", "u") else "a"


def class_prompt(template: str, label: str, source: str = "[dataset] caption_template") -> str:
    """Fill ``template`` with ``{label}`` (underscores become spaces) and ``{article}``.

    ``"a photo of {article} {label}"`` with ``"automobile"`` -> ``"a photo of an automobile"``.
    """
    name = label.replace("_", " ")
    try:
        return template.format(label=name, article=article(name))
    except (KeyError, IndexError, ValueError) as exc:
        raise sfumato.SpecError(
            f"{source} = {template!r} uses an unknown placeholder {exc}; "
            "only {label} and {article} are filled in"
        ) from exc
