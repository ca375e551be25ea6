"""Is a field the contract does not know sensitive? A scan of its name, then of its value.

A producer may add any field without a coordinated deploy; most are harmless (``wallet_type``),
some are not (``pan``). ``classify`` answers with the rule that matched, or None:

- by name: the field's name, split into words (``cardNumber``, ``card_number`` and
  ``CARD-NUMBER`` alike), names card data, a security code, an expiry, an e-mail, a bank
  account, a national id, a phone, a person's name or an address;
- by value: a string (or a number, or any string inside a nested value) holds a card number
  (13 to 19 digits, spaces or dashes between them allowed, Luhn-valid), an e-mail address, an
  IBAN whose mod-97 check holds, or, under a name that says so, a 3-4 digit security code.

Hostile input stays cheap: a string is scanned up to ``SCAN_CHARS``, a nested value up to
``SCAN_NODES`` values, and every scan is one pass (no pattern can backtrack). What is larger
cannot be cleared, so it fails closed (``too_large_to_scan``): padding must not hide a card
number. The rule for what then happens to the field is in ``mercury.contracts.validation``
(docs/COMPLIANCE.md, "Data classes at the sinks").
"""

from __future__ import annotations

import re
from typing import Any

SCAN_CHARS = 4096   # a longer unknown string is not scanned: it is dropped
SCAN_NODES = 256    # likewise a nested unknown value of more values than this
TOO_LARGE = "too_large_to_scan"

# Words of a field name -> the rule. Multi-word names are matched on the joined words, so
# ``card_number`` and ``cardNumber`` both read ``cardnumber``.
_NAME_RULES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (rule, re.compile(pattern)) for rule, pattern in (
        ("name_card_number", r"^[fd]?pan$|cardnum|cardno$|ccnum|cardpan|primaryaccountnumber"),
        ("name_security_code", r"^(cvv|cvc)|^(cvn|csc)$|securitycode|cardverification"),
        ("name_expiry", r"^exp$|expiry|expiration|expdate|expmonth|expyear|validthru"
                        r"|validuntil"),
        ("name_email", r"^e?mail$|email"),
        ("name_bank_account", r"iban|^(bic|swift)$|bankaccount|accountnumber|routingnumber"
                              r"|sortcode"),
        ("name_national_id", r"^(ssn|sin|nin|tin|passport)$|socialsecurity|nationalid|taxid"
                             r"|passportnumber|driv(er|ers|ing)licen[cs]e"),
        ("name_phone", r"^(phone|mobile|msisdn|tel|telephone)$|phonenumber|mobilenumber"),
        ("name_person", r"^name$|fullname|firstname|lastname|middlename|surname|givenname"
                        r"|familyname|maidenname|nickname|cardholder|holdername|nameoncard"),
        ("name_address", r"^address$|streetaddress|homeaddress|billingaddress|postcode|zipcode"
                         r"|postalcode|dateofbirth|birthdate|^dob$"),
    ))
_WORD = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")

# One pass over a bounded string; every quantifier is bounded or over a disjoint class.
_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]{1,64}@(?:[A-Za-z0-9-]{1,63}\.){1,8}[A-Za-z]{2,63}")
_IBAN = re.compile(r"(?<![A-Za-z0-9])([A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11,30})(?![A-Za-z0-9])")
_SECURITY_CODE = re.compile(r"^\s*[0-9]{3,4}\s*$")


def name_rule(name: str) -> str | None:
    """The rule a field name breaks (its last path segment is read), or None."""
    leaf = name[:SCAN_CHARS].rsplit(".", 1)[-1]
    joined = "".join(w.lower() for w in _WORD.findall(leaf))
    for rule, pattern in _NAME_RULES:
        if pattern.search(joined):
            return rule
    return None


def value_rule(value: Any) -> str | None:
    """The rule a value breaks (strings, integers and keys, at any depth of a nested value)."""
    seen = 0
    pending = [value]
    while pending:
        item = pending.pop()
        seen += 1
        if seen > SCAN_NODES:
            return TOO_LARGE
        if isinstance(item, (dict, list)) and seen + len(item) > SCAN_NODES:
            return TOO_LARGE
        if isinstance(item, dict):
            pending.extend(item.values())
            pending.extend(item.keys())
        elif isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, str) or (isinstance(item, int) and not isinstance(item, bool)):
            text = item if isinstance(item, str) else str(item)
            if len(text) > SCAN_CHARS:
                return TOO_LARGE
            found = text_rule(text)
            if found:
                return found
    return None


def classify(name: str, value: Any) -> str | None:
    """Why the field ``name`` holding ``value`` is sensitive (a rule name), or None. The name
    is also read as text: a producer may put an e-mail or a card number in a key."""
    by_name = name_rule(name)
    if by_name == "name_security_code" and _looks_like_code(value):
        return "value_security_code"
    if len(name) > SCAN_CHARS:
        return TOO_LARGE
    return by_name or text_rule(name) or value_rule(value)


def text_rule(text: str) -> str | None:
    """The rule a piece of text breaks (a card number, an e-mail, an IBAN), or None."""
    if has_card_number(text):
        return "value_card_number"
    if _EMAIL.search(text):
        return "value_email"
    if any(iban_checks(m.group(1)) for m in _IBAN.finditer(text)):
        return "value_iban"
    return None


def has_card_number(text: str) -> bool:
    """A card number written in ``text``: 13-19 digits that start as a payment card does and
    pass the Luhn check, made of whole groups of a run of digits (single spaces or dashes
    between groups), so neither a digit group before it (``ref 1 4111 1111 1111 1111``) nor
    one after it (``... 1111 2027``) hides it. Linear: each group start tries at most 19 group
    ends, each checked in O(1) from prefix sums."""
    for digits, starts in _digit_runs(text):
        ends = [*starts[1:], len(digits)]
        sums = _luhn_prefix_sums(digits)
        for first, start in enumerate(starts):
            for end in ends[first:]:
                if end - start > 19:
                    break
                if _card_shaped(digits, start, end) and \
                        (sums[end % 2][end] - sums[end % 2][start]) % 10 == 0:
                    return True
    return False


def _digit_runs(text: str) -> list[tuple[list[int], list[int]]]:
    """Each run of digit groups (single spaces or dashes between them): its digits and the
    index where each group starts."""
    runs: list[tuple[list[int], list[int]]] = []
    digits: list[int] = []
    starts: list[int] = []
    gap = False  # the previous character was a separator inside a run
    for char in text + "x":
        if "0" <= char <= "9":
            if not digits or gap:
                starts.append(len(digits))
            digits.append(ord(char) - 48)
            gap = False
        elif char in " -" and digits and not gap:
            gap = True
        else:
            if len(digits) >= 13:
                runs.append((digits, starts))
            digits, starts, gap = [], [], False
    return runs


_DOUBLED = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)  # a digit doubled, its two digits added (Luhn)


def _luhn_prefix_sums(digits: list[int]) -> tuple[list[int], list[int]]:
    """``sums[p][i]``: the Luhn sum of ``digits[:i]`` with the digits at indices of parity
    ``p`` doubled. A window ``[s, e)`` doubles every second digit from its right end, i.e.
    the indices of parity ``e % 2``: its sum is ``sums[e % 2][e] - sums[e % 2][s]``."""
    even, odd = [0], [0]
    for i, digit in enumerate(digits):
        doubled = _DOUBLED[digit]
        even.append(even[-1] + (doubled if i % 2 == 0 else digit))
        odd.append(odd[-1] + (doubled if i % 2 == 1 else digit))
    return even, odd


def _card_shaped(digits: list[int], start: int, end: int) -> bool:
    """ISO 7812: cards of the payment networks start with 2-6; only Visa issued 13 digits.
    Epoch-millisecond times (13 digits, starting with 1 or 2 this century) are not cards."""
    if end - start == 13:
        return digits[start] == 4
    return 14 <= end - start <= 19 and 2 <= digits[start] <= 6


def iban_checks(candidate: str) -> bool:
    """ISO 13616: the country and check digits moved to the end, letters as 10-35, mod 97 = 1."""
    text = candidate.replace(" ", "")
    if not 15 <= len(text) <= 34:
        return False
    rearranged = text[4:] + text[:4]
    remainder = 0
    for char in rearranged:
        value = int(char, 36)  # 0-9 -> 0-9, A-Z -> 10-35
        remainder = (remainder * (100 if value > 9 else 10) + value) % 97
    return remainder == 1


def _looks_like_code(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return False
    return _SECURITY_CODE.match(str(value)[:16]) is not None
