"""Credentials out of everything tuneline prints or stores: a git --source URL, PREFECT_API_URL, a DVC remote URL
or an exception's text can carry `user:password@`, a token in a query string, or an Authorization header."""
from __future__ import annotations

import re

HIDDEN = "***"
_PATTERNS = [
    # scheme://user:password@host (or a bare token as the user part)
    (re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.\-]*://)[^/\s@'\"]+@"), rf"\g<scheme>{HIDDEN}@"),
    # ?token=... &access_token=... &X-Amz-Signature=...
    (re.compile(r"(?P<key>[?&;](?:access_token|token|api_key|apikey|key|password|passwd|secret|sig|signature|"
                r"x-amz-signature|x-amz-credential|x-amz-security-token|auth)=)[^&#\s'\"]+", re.IGNORECASE),
     rf"\g<key>{HIDDEN}"),
    # Authorization: Bearer ... / Basic ...
    (re.compile(r"(?P<head>\bAuthorization:\s*(?:Bearer|Basic|token)\s+)\S+", re.IGNORECASE), rf"\g<head>{HIDDEN}"),
    # Well-known token shapes that travel on their own (GitHub, GitLab, AWS access key ids)
    (re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}|glpat-[A-Za-z0-9_\-]{20,}|"
                r"AKIA[0-9A-Z]{16})\b"), HIDDEN),
]


def redact(text: str) -> str:
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text
