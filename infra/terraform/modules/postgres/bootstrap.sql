-- The service roles of the platform's Postgres and what each may do: nothing more.
--
-- Run once after the first apply, as the master user (its secret is a `postgres` output),
-- connected to the database `profiles`, once `mercury.user_profiles` exists (the profile
-- service owns it; locally the generator creates it). Safe to run again: every statement
-- checks first. The database `mercury_ops` is made before, by one statement of its own
-- (CREATE DATABASE cannot run inside the transaction this file runs in):
--
--   CREATE DATABASE mercury_ops;        -- connected to any database, as the master user
--   psql "host=<postgres_endpoint> dbname=profiles user=<master> sslmode=verify-full" \
--        --single-transaction -f bootstrap.sql
--   then, connected to mercury_ops:  ALTER DATABASE mercury_ops OWNER TO mercury_ops;
--
-- The rotation sets each role's password afterwards (main.tf); no password is set here.
-- tests/test_production_profile.py runs this file on a private TLS server and then every
-- binding as these roles, and checks what each role is refused.
--
--   mercury_cdc   the CDC pump: logical replication of mercury.user_profiles, the erasure
--                 of a profile row at the source, the erasure register (privacy schema)
--   mercury_keys  the users' wrapped data keys (privacy.user_keys), nothing else
--   mercury_ops   deployment records and replay ledgers, in its own database only

DO $roles$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'mercury_cdc') THEN
        CREATE ROLE mercury_cdc LOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'mercury_keys') THEN
        CREATE ROLE mercury_keys LOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'mercury_ops') THEN
        CREATE ROLE mercury_ops LOGIN;
    END IF;
    -- Aurora grants replication through a role (its master user cannot set the attribute);
    -- a plain server through the attribute.
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'rds_replication') THEN
        GRANT rds_replication TO mercury_cdc;
    ELSE
        ALTER ROLE mercury_cdc REPLICATION;
    END IF;
END
$roles$;

-- Who may connect where: the ops role never sees the profiles database.
REVOKE CONNECT, TEMPORARY ON DATABASE profiles FROM PUBLIC;
GRANT CONNECT ON DATABASE profiles TO mercury_cdc, mercury_keys;
-- The pump stages a snapshot batch in a temporary table.
GRANT TEMPORARY ON DATABASE profiles TO mercury_cdc;
REVOKE CONNECT, TEMPORARY ON DATABASE mercury_ops FROM PUBLIC;
GRANT CONNECT ON DATABASE mercury_ops TO mercury_ops;

-- The profiles: read (snapshot), replicated, and deleted at erasure. The publication is made
-- here because only the table's owner may publish it (on Aurora the master user acts as the
-- owner once a member of the owner's role: GRANT <owner> TO <master>). Deletes carry the
-- whole old row only under REPLICA IDENTITY FULL, which the pump checks.
REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA mercury TO mercury_cdc;
GRANT SELECT, DELETE ON mercury.user_profiles TO mercury_cdc;
ALTER TABLE mercury.user_profiles REPLICA IDENTITY FULL;
DO $publication$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_publication WHERE pubname = 'mercury_profiles_cdc') THEN
        CREATE PUBLICATION mercury_profiles_cdc FOR TABLE mercury.user_profiles
            WITH (publish = 'insert, update, delete');
    END IF;
END
$publication$;

-- The privacy schema: each role creates and owns its own table there (the code creates it on
-- first use) and cannot read the other's: the key role never sees erasure requests, the CDC
-- role never sees a user's key.
CREATE SCHEMA IF NOT EXISTS privacy;
REVOKE ALL ON SCHEMA privacy FROM PUBLIC;
GRANT USAGE, CREATE ON SCHEMA privacy TO mercury_cdc, mercury_keys;
