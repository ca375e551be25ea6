"""The data subject's rights (GDPR): erasure from every store with evidence (Art. 17,
``erasure``) and the export of all that is stored about them (Art. 15, ``access``).

The low-level parts that other packages use live in ``mercury.privacy``: the erasure
register and the tombstones that loaders and the streaming job check."""
