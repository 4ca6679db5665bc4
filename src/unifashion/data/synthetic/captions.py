"""Captions of synthetic garments in the three styles of the paper's instruction table (Table 7).

- :func:`professional` - FashionGen ("Write a detail and professional description"): short
  sentences, e.g. "Long sleeve a-line dress in navy. Vertical stripes in white throughout. Crew
  neck. Slim fit. Knee-length hem."
- :func:`short` - Fashion200K ("Short description"): one lower-case phrase of single-word slots,
  e.g. "navy striped long-sleeve knee-length a-line dress"; two garments of one sub-category that
  differ in exactly one captioned attribute get captions that differ in exactly one word.
- :func:`detailed` - Fashion-IQ-cap ("Describe the cloth's style, color, design..."): two full
  sentences naming every attribute.
- :func:`modifying_texts` - Fashion-IQ relative captions: two different phrasings of the real
  attribute difference between a reference and a target (colours named are the target's).
- :func:`noun_chunks` - MGD/VITON-HD captions: three lower-case noun chunks.
"""

from __future__ import annotations

import re

import numpy as np

from unifashion.data.synthetic.attributes import Garment

PATTERN_WORD = {
    "solid": "plain",
    "vertical stripes": "striped",
    "horizontal stripes": "horizontal-striped",
    "checks": "checked",
    "polka dots": "polka-dot",
    "colour block": "colour-block",
}
"""Single-word pattern adjectives (Fashion200K captions, noun chunks)."""

SLEEVE_WORD = {"sleeveless": "sleeveless", "short": "short-sleeve", "long": "long-sleeve"}
"""Single-word sleeve adjectives."""

_PRO_PATTERN = {
    "vertical stripes": "Vertical stripes in {c} throughout.",
    "horizontal stripes": "Horizontal stripes in {c} throughout.",
    "checks": "Check pattern in {c} throughout.",
    "polka dots": "Polka dots in {c} throughout.",
    "colour block": "Colour-block panel in {c} at lower half.",
}
_SUB_DETAIL = {
    "SHIRTS": "Button closure at front.",
    "BLOUSES": "Relaxed drape.",
    "JACKETS": "Button closure at front. Welt pockets at waist.",
    "COATS": "Button closure at front. Welt pockets at waist.",
    "TROUSERS": "Zip fly. Slant pockets at waistband.",
    "SHORTS": "Zip fly. Slant pockets at waistband.",
    "PENCIL SKIRTS": "Concealed zip at back.",
    "A-LINE SKIRTS": "Concealed zip at back.",
    "A-LINE DRESSES": "Seam at waist. Flared skirt.",
    "SHEATH DRESSES": "Fitted silhouette.",
    "SHIFT DRESSES": "Straight silhouette.",
    "SWEATERS": "Rib knit trims.",
}


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def professional(g: Garment) -> str:
    """FashionGen-style professional description of a garment."""
    sub = g.sub
    if g.sleeve_length is not None and len(sub.sleeves) > 0:
        sleeve = {"sleeveless": "Sleeveless", "short": "Short sleeve", "long": "Long sleeve"}[g.sleeve_length]
        parts = [f"{sleeve} {sub.noun} in {g.primary_colour}."]
    else:
        parts = [f"{_cap(sub.noun)} in {g.primary_colour}."]
    parts.append("Solid colour throughout." if g.pattern == "solid" else _PRO_PATTERN[g.pattern].format(c=g.secondary_colour))
    if g.neckline is not None:
        parts.append(f"{_cap(g.neckline)}.")
    parts.append(f"{_cap(g.fit)} fit.")
    parts.append(f"{_cap(g.length)} hem.")
    if g.subcategory in _SUB_DETAIL:
        parts.append(_SUB_DETAIL[g.subcategory])
    return " ".join(parts)


_PRO_SLEEVE = {"Sleeveless": "sleeveless", "Short sleeve": "short", "Long sleeve": "long"}
_FIRST_SENTENCE = re.compile(r"^(?:(Sleeveless|Short sleeve|Long sleeve) )?([A-Za-z][a-z -]*?) in ([a-z]+)\.")


def parse_professional(text: str) -> dict[str, str | None]:
    """Reads the attributes a professional-style caption names (the inverse of `professional`).

    Works on generated captions too: whatever does not follow the template comes back as None.

    Returns:
        ``{"garment": noun, "sleeve_length", "primary_colour", "pattern", "secondary_colour"}``;
        ``pattern`` is "solid" for "Solid colour throughout.", a key of PATTERN_WORD otherwise.
    """
    out: dict[str, str | None] = dict.fromkeys(("garment", "sleeve_length", "primary_colour", "pattern",
                                                "secondary_colour"))
    text = text.strip()
    first = _FIRST_SENTENCE.match(text)
    if first is None:
        return out
    sleeve, noun, colour = first.groups()
    out.update(garment=noun.lower(), sleeve_length=_PRO_SLEEVE.get(sleeve) if sleeve else None,
               primary_colour=colour)
    rest = text[first.end():].strip()
    if rest.startswith("Solid colour throughout."):
        out["pattern"] = "solid"
        return out
    for pattern, template in _PRO_PATTERN.items():
        head, tail = template.split("{c}")
        m = re.match(re.escape(head) + r"([a-z]+)" + re.escape(tail), rest)
        if m:
            out.update(pattern=pattern, secondary_colour=m.group(1))
            break
    return out


def short(g: Garment) -> str:
    """Fashion200K-style short description (fixed single-word slots per sub-category)."""
    words = [g.primary_colour, PATTERN_WORD[g.pattern]]
    if g.sub.sleeves:
        words.append(SLEEVE_WORD[g.sleeve_length or "long"])
    words.append(g.length)
    words.append(g.sub.noun)
    return " ".join(words)


def detailed(g: Garment) -> str:
    """Fashion-IQ-cap style detailed description."""
    noun = g.sub.noun
    if g.pattern == "solid":
        first = f"The {noun} is a solid {g.primary_colour} piece with no pattern."
    elif g.pattern == "colour block":
        first = f"The {noun} is {g.primary_colour} with a {g.secondary_colour} colour-block lower half."
    else:
        first = f"The {noun} is {g.primary_colour} with {g.secondary_colour} {g.pattern}."
    bits = []
    if g.sleeve_length is not None:
        bits.append("no sleeves" if g.sleeve_length == "sleeveless" else f"{g.sleeve_length} sleeves")
    if g.neckline is not None:
        neck = g.neckline if "collar" in g.neckline or "lapel" in g.neckline else f"{g.neckline} neckline"
        neck = neck.replace("neck neckline", "neckline")
        bits.append(f"a {neck}" if not neck.startswith("collarless") else "a collarless front")
    bits.append(f"a {g.fit} fit")
    second = "It has " + (", ".join(bits[:-1]) + " and " + bits[-1] if len(bits) > 1 else bits[0])
    return f"{first} {second}, with a {g.length} hem."


def noun_chunks(g: Garment) -> list[str]:
    """Three lower-case noun chunks (MGD captions.json style)."""
    generic = {"top": "top", "dress": "dress", "jacket": "jacket", "skirt": "skirt", "pants": "pants"}[g.kind]
    first = [g.primary_colour]
    if g.sleeve_length is not None:
        first.append(SLEEVE_WORD[g.sleeve_length])
    if g.neckline is not None:
        first.append(g.neckline.replace(" ", "-"))
    first.append(g.sub.noun)
    pattern = PATTERN_WORD[g.pattern] if g.pattern == "solid" else f"{g.secondary_colour} {PATTERN_WORD[g.pattern]}"
    return [" ".join(first), f"{pattern} {g.fit}-fit {generic}", f"{g.length} {generic}"]


# ---- Fashion-IQ modifying texts -------------------------------------------------------------------

def _phrases(ref: Garment, tgt: Garment, attr: str) -> tuple[str, str]:
    """(phrasing A, phrasing B) of one attribute change; colours named are the target's only."""
    if attr == "primary_colour":
        return f"is {tgt.primary_colour}", f"{tgt.primary_colour} colored"
    if attr in ("pattern", "secondary_colour"):
        if tgt.pattern == "solid":
            return "is solid colored", "no pattern"
        c = tgt.secondary_colour
        a = {
            "vertical stripes": f"has {c} vertical stripes",
            "horizontal stripes": f"has {c} horizontal stripes",
            "checks": f"has a {c} check pattern",
            "polka dots": f"has {c} polka dots",
            "colour block": f"has a {c} lower half",
        }[tgt.pattern]
        b = {
            "vertical stripes": f"striped in {c}",
            "horizontal stripes": f"horizontal {c} stripes",
            "checks": f"{c} checks",
            "polka dots": f"{c} dotted",
            "colour block": f"{c} colour block",
        }[tgt.pattern]
        return a, b
    if attr == "sleeve_length":
        order = ("sleeveless", "short", "long")
        longer = order.index(tgt.sleeve_length) > order.index(ref.sleeve_length)
        a = "is sleeveless" if tgt.sleeve_length == "sleeveless" else f"has {tgt.sleeve_length} sleeves"
        b = "no sleeves" if tgt.sleeve_length == "sleeveless" else ("longer sleeves" if longer else "shorter sleeves")
        return a, b
    if attr == "length":
        lengths = ref.sub.lengths
        longer = lengths.index(tgt.length) > lengths.index(ref.length)
        return ("is longer" if longer else "is shorter"), f"{tgt.length}"
    if attr == "neckline":
        n = tgt.neckline
        return f"has a {n}", f"{n} instead"
    if attr == "fit":
        order = ("slim", "regular", "loose")
        looser = order.index(tgt.fit) > order.index(ref.fit)
        return ("is looser" if looser else "is tighter"), f"{tgt.fit} fit"
    raise ValueError(f"no phrasing for attribute {attr!r}")


def modifying_texts(ref: Garment, tgt: Garment, rng: np.random.Generator) -> list[str]:
    """Two relative captions describing how `tgt` differs from `ref` (Fashion-IQ style).

    Caption A lists "is/has ..." clauses ("x, y and z"); caption B uses comparative/adjective forms
    joined with commas, in a shuffled order. Both mention every changed attribute; colour words
    are always the target's (primary or pattern colour).

    Args:
        ref: the reference (candidate) garment.
        tgt: the target garment (must differ from `ref`).
        rng: seeded generator (clause order of caption B).

    Returns:
        [caption A, caption B].
    """
    attrs = [a for a in ("primary_colour", "pattern", "sleeve_length", "length", "neckline", "fit")
             if getattr(ref, a) != getattr(tgt, a)]
    if "pattern" not in attrs and ref.secondary_colour != tgt.secondary_colour:
        attrs.insert(1, "secondary_colour")
    if not attrs:
        raise ValueError(f"products {ref.product_id} and {tgt.product_id} have the same attributes")
    pairs = [_phrases(ref, tgt, a) for a in attrs]
    first = [p[0] for p in pairs]
    a = first[0] if len(first) == 1 else ", ".join(first[:-1]) + " and " + first[-1]
    order = rng.permutation(len(pairs))
    b = ", ".join(pairs[int(i)][1] for i in order)
    return [a, b]
