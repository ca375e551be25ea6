"""Redaction of free text (the assistant's questions) before it is stored in clear.

Masks what questions most often carry that identifies a person or a card: e-mail addresses,
IBAN-like strings, card security codes (CVV/CVC and the like, which PCI-DSS forbids storing at
all), card expiry dates, and runs of four or more digits (card numbers, phone and account
numbers, a card's last four). Decimal amounts (25.50) stay. Names are not found by pattern:
redacted text is still personal data.

Every pattern runs in linear time on hostile input: a match may only start where its token
starts (a lookbehind refuses a start inside a run of the same characters), so a 4,000-character
run of ``_`` or digits is scanned once, not once per position.
"""

from __future__ import annotations

import re

# Local part, then domain labels; the lookbehind stops a retry at every position of a long run.
_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]{1,64}@(?:[\w-]{1,63}\.)+[\w-]{2,63}")
_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?"
                   r"(?![A-Za-z0-9])")
_SECURITY_CODE = re.compile(
    r"(?i)(?<![a-z])(?:cvv2?|cvc2?|cvn|cid|csc|security code|card verification(?: code| value)?"
    r"|cryptogramme|code de s[ée]curit[ée]|c[óo]digo de seguridad|pr[üu]fziffer"
    r"|kartenpr[üu]fnummer|sicherheitscode)(?![a-z])[^0-9\n]{0,12}?\d{3,4}(?!\d)")
_EXPIRY_WORDS = (r"exp(?:iry|ires|iration)?|valid (?:thru|through|until)|good thru|"
                 r"expire[sz]?|fin de validit[ée]|vence|vencimiento|g[üu]ltig bis|ablaufdatum")
_EXPIRY = re.compile(
    rf"(?i)(?<![a-z])(?:{_EXPIRY_WORDS})(?![a-z])[^0-9\n]{{0,12}}?(?:0?[1-9]|1[0-2])"
    r"\s?[/.-]\s?(?:\d{4}|\d{2})(?!\d)"
    r"|(?<![\d/])(?:0[1-9]|1[0-2])/\d{2}(?![\d/])")
_DIGITS = re.compile(r"(?<![\d])\d(?:[ -]?\d){3,}")


def redact(text: str) -> str:
    text = _EMAIL.sub("[email]", text)
    text = _IBAN.sub("[iban]", text)
    text = _SECURITY_CODE.sub("[security code]", text)
    text = _EXPIRY.sub("[expiry]", text)
    return _DIGITS.sub("[number]", text)
