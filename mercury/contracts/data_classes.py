"""Data classes: how sensitive each field is. Tokenization and masking are driven by these.

- public: safe to show and log (ids of merchants, amounts, enums, timestamps).
- pseudonymous_id: identifies a person only through our own mapping (user_id, account_id,
  device ids); may be joined on, never shown to other users.
- personal: identifies or describes a person (name, email, free text they typed).
- card_data: cardholder data under PCI DSS; never leaves the secure zone unmasked.
"""

from __future__ import annotations

from enum import StrEnum

from mercury.contracts.avro_walk import Schema, iter_fields


class DataClass(StrEnum):
    PUBLIC = "public"
    PSEUDONYMOUS_ID = "pseudonymous_id"
    PERSONAL = "personal"
    CARD_DATA = "card_data"


def field_classes(schema: Schema) -> dict[str, DataClass]:
    """Every field path (``after.email``) of a schema with its data class."""
    return {path: DataClass(field["data_class"]) for path, field in iter_fields(schema)
            if field.get("data_class") in DataClass._value2member_map_}


def missing_data_classes(schema: Schema) -> list[str]:
    """Field paths that carry no data class, or one that is not known."""
    return [f"{path} (data_class={field.get('data_class')!r})"
            for path, field in iter_fields(schema)
            if field.get("data_class") not in DataClass._value2member_map_]
