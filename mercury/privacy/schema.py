"""The ``privacy`` schema in the profiles database, shared by the erasure register and the
users' data keys."""

# Made only when missing: production's service roles have no CREATE on the database
# (infra/terraform/modules/postgres/bootstrap.sql makes the schema), and Postgres checks that
# privilege before it looks whether the schema exists, even under IF NOT EXISTS.
CREATE_PRIVACY_SCHEMA = """
DO $schema$
BEGIN
    IF to_regnamespace('privacy') IS NULL THEN
        CREATE SCHEMA privacy;
    END IF;
END
$schema$;
"""
