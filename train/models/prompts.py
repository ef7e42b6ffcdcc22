"""The text side of both models: QualiCLIP's antonym pairs and BPCLIP's quality adjectives.

Text never reaches an inference graph: these strings are encoded once by the frozen CLIP text
tower and the embeddings are stored as constants (see DESIGN.md).
"""

from __future__ import annotations

# QualiCLIP (Agnolucci et al.): 7 antonym pairs, positive first. The order fixes the layout of
# the official `prompts_features` tensor (14 rows: pos0, neg0, pos1, neg1, ...).
ANTONYM_PAIRS: tuple[tuple[str, str], ...] = (
    ("Good photo.", "Bad photo."),
    ("Sharp image.", "Blurry image."),
    ("Sharp edges.", "Blurry edges."),
    ("High-resolution image.", "Low-resolution image."),
    ("Noise-free image.", "Noisy image."),
    ("High-quality image.", "Low-quality image."),
    ("Good picture.", "Bad picture."),
)


def antonym_prompts() -> list[str]:
    """The 14 prompts flattened positive-first, in the row order of `prompts_features`."""
    return [prompt for pair in ANTONYM_PAIRS for prompt in pair]


# BPCLIP (Song et al., ICME 2025): 40 quality adjectives in six dimensions. The paper names the
# count and the idea (attributes from distortion to semantics) but does not publish the list;
# this list is OUR choice. Each dimension mixes good and bad poles so that the attribute vector
# can express a direction, and the dimensions run bottom-up: low-level signal properties first
# (sharpness, noise), then colour and exposure, then coding artifacts, then overall judgement.
QUALITY_ADJECTIVES: dict[str, tuple[str, ...]] = {
    "sharpness": ("sharp", "crisp", "detailed", "clear", "blurry", "fuzzy", "out-of-focus"),
    "noise": ("clean", "noise-free", "smooth", "noisy", "grainy", "speckled"),
    "colour": ("colorful", "vivid", "natural-colored", "faded", "washed-out", "discolored", "oversaturated"),
    "exposure": ("well-exposed", "bright", "balanced", "dark", "dim", "overexposed", "underexposed"),
    "artifacts": ("pristine", "artifact-free", "blocky", "pixelated", "jagged", "distorted"),
    "overall": ("high-quality", "excellent", "beautiful", "good", "low-quality", "bad", "poor"),
}

# How many of each dimension's adjectives (listed first) are its good pole; the rest are its bad
# pole. OURS, as the list is: it lets a dimension be read as one score (BPCLIP.dimension_scores).
GOOD_ADJECTIVES: dict[str, int] = {
    "sharpness": 4,
    "noise": 3,
    "colour": 3,
    "exposure": 3,
    "artifacts": 2,
    "overall": 4,
}

ADJECTIVE_TEMPLATE = "a {} photo."


def adjective_prompts() -> list[str]:
    """The 40 adjective prompts in dimension order: the row order of BPCLIP's text constants."""
    return [ADJECTIVE_TEMPLATE.format(adj) for adjs in QUALITY_ADJECTIVES.values() for adj in adjs]


def adjective_dimensions() -> list[str]:
    """The dimension name of each adjective row, parallel to `adjective_prompts()`."""
    return [dim for dim, adjs in QUALITY_ADJECTIVES.items() for _ in adjs]


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text.lower().rstrip(".")).strip("_")


def pair_attribute_names() -> list[str]:
    """QualiCLIP's attributes: each antonym pair by its positive prompt ("sharp_edges"), whose
    probability against the negative one it holds."""
    return [_slug(positive) for positive, _ in ANTONYM_PAIRS]


def adjective_attribute_names() -> list[str]:
    """BPCLIP's 40 adjective similarities by adjective ("adj_out_of_focus")."""
    return ["adj_" + _slug(adjective) for adjectives in QUALITY_ADJECTIVES.values() for adjective in adjectives]


def attribute_names(family: str) -> list[str]:
    """The attributes a model family's graphs output, in order: QualiCLIP's 7 pairs; BPCLIP's 6
    dimensions, then its 40 adjectives."""
    if family == "qualiclip":
        return pair_attribute_names()
    return list(QUALITY_ADJECTIVES) + adjective_attribute_names()
