"""Event contracts: Avro schemas, data classes, validation, compatibility, wire format, registry.

Every field of every schema carries a ``data_class`` (see ``data_classes``); string fields may
carry a ``format`` that validation enforces beyond Avro's types (currency, country, MCC, uuid).
"""
