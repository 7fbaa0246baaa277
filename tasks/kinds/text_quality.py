"""Text-quality helpers for validation: normalization for near-duplicates, encoding damage, script share.

Pure functions over pandas Series, vectorised with the `str` accessor so 38k rows take well under a second.
"""
from __future__ import annotations

import pandas as pd

URL = r"(?:https?://|www\.)\S+"
HANDLE = r"@\w+"
# Signs that text was decoded with the wrong codec: U+FFFD (bytes that could not be decoded), C1 control characters
# (what cp1252/Mac Roman punctuation becomes when read as latin-1), and classic UTF-8-read-as-latin-1 pairs.
REPLACEMENT_CHAR = "\ufffd"
C1_CONTROLS = r"[\x80-\x9f]"
MOJIBAKE_PAIRS = r"Ã[\x80-\xbf]|â€|Â[\xa0-\xbf]|Õ¢"


def normalize(text: pd.Series) -> pd.Series:
    """Key for near-duplicate detection: case, URLs, user handles and whitespace do not make a text different."""
    return (text.str.lower()
            .str.replace(URL, " ", regex=True)
            .str.replace(HANDLE, " ", regex=True)
            .str.replace(r"\s+", " ", regex=True)
            .str.strip())


def undecodable(text: pd.Series) -> pd.Series:
    return text.str.contains(REPLACEMENT_CHAR, regex=False)


def mojibake(text: pd.Series) -> pd.Series:
    return text.str.contains(C1_CONTROLS, regex=True) | text.str.contains(MOJIBAKE_PAIRS, regex=True)


def latin_letter_share(text: pd.Series) -> float:
    """Share of letters that are Latin script (ASCII or Latin-1/Extended): a cheap language/charset signal."""
    letters = text.str.count(r"[^\W\d_]").sum()
    latin = text.str.count(r"[A-Za-z\u00c0-\u024f]").sum()
    return float(latin / letters) if letters else 1.0


def length_profile(text: pd.Series) -> dict:
    """Character-length distribution and outliers (beyond Q3 + 3·IQR); long texts are truncated later, not rejected."""
    chars = text.str.len()
    words = text.str.split().str.len()
    if chars.empty:
        return {"rows": 0}
    q1, q3 = chars.quantile([0.25, 0.75])
    limit = q3 + 3 * (q3 - q1)
    outliers = chars[chars > limit]
    return {
        "chars": {k: float(v) for k, v in chars.describe(percentiles=[0.05, 0.5, 0.95, 0.99]).items() if k != "count"},
        "words": {k: float(v) for k, v in words.describe(percentiles=[0.5, 0.95]).items() if k != "count"},
        "outlier_limit_chars": float(limit),
        "outliers": int(len(outliers)),
    }
