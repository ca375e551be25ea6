# Snowflake objects of docs/COMPLIANCE.md ("How production enforces it"): the database and its
# schemas (AUDIT: the lake's audit tables; ANALYTICS: dbt staging; ANALYTICS_COMPLIANCE: the
# marts analysts query), the roles (dbt's TRANSFORMER owns the objects; analysts read the
# compliance marts only; investigators inherit the analysts and alone see personal values),
# the masking policy on the raw audit columns, and the warehouses.

terraform {
  required_providers {
    snowflake = { source = "snowflakedb/snowflake" }
  }
}

locals {
  # Time Travel kept short on purpose: an erased user's rows must be gone within the GDPR's
  # 30 days, and Time Travel (then 7 days of Fail-safe) keeps deleted rows.
  schemas = {
    AUDIT                = "Audit tables of the lake (inference requests, safety outcomes)"
    ANALYTICS            = "dbt staging and feature marts; no analyst grants"
    ANALYTICS_COMPLIANCE = "Compliance marts; the only schema compliance analysts read"
  }
}

resource "snowflake_database" "mercury" {
  name                        = var.database
  comment                     = "MercuryPay context data platform"
  data_retention_time_in_days = 1
}

resource "snowflake_schema" "this" {
  for_each                    = local.schemas
  database                    = snowflake_database.mercury.name
  name                        = each.key
  comment                     = each.value
  data_retention_time_in_days = 1
}

resource "snowflake_database" "governance" {
  name    = "GOVERNANCE"
  comment = "Policies applied across databases (owned by the security team's role)"
}

resource "snowflake_schema" "policies" {
  database = snowflake_database.governance.name
  name     = "POLICIES"
}

# --- roles --------------------------------------------------------------------------------

resource "snowflake_account_role" "this" {
  for_each = toset([var.transformer_role, var.analyst_role, var.investigator_role])
  name     = each.value
}

# Investigators see what analysts see, plus the personal values (through the policy below).
resource "snowflake_grant_account_role" "investigator_is_analyst" {
  role_name        = snowflake_account_role.this[var.analyst_role].name
  parent_role_name = snowflake_account_role.this[var.investigator_role].name
}

resource "snowflake_grant_privileges_to_account_role" "database_usage" {
  for_each          = toset([var.transformer_role, var.analyst_role])
  account_role_name = snowflake_account_role.this[each.value].name
  privileges        = ["USAGE"]
  on_account_object {
    object_type = "DATABASE"
    object_name = snowflake_database.mercury.name
  }
}

# dbt builds every schema's objects (and so owns them).
resource "snowflake_grant_privileges_to_account_role" "transformer_schemas" {
  for_each          = local.schemas
  account_role_name = snowflake_account_role.this[var.transformer_role].name
  privileges        = ["USAGE", "CREATE TABLE", "CREATE VIEW"]
  on_schema {
    schema_name = snowflake_schema.this[each.key].fully_qualified_name
  }
}

resource "snowflake_grant_privileges_to_account_role" "analyst_schema" {
  account_role_name = snowflake_account_role.this[var.analyst_role].name
  privileges        = ["USAGE"]
  on_schema {
    schema_name = snowflake_schema.this["ANALYTICS_COMPLIANCE"].fully_qualified_name
  }
}

resource "snowflake_grant_privileges_to_account_role" "analyst_objects" {
  for_each = {
    all_tables    = { kind = "all", plural = "TABLES" }
    all_views     = { kind = "all", plural = "VIEWS" }
    future_tables = { kind = "future", plural = "TABLES" }
    future_views  = { kind = "future", plural = "VIEWS" }
  }
  account_role_name = snowflake_account_role.this[var.analyst_role].name
  privileges        = ["SELECT"]
  on_schema_object {
    dynamic "all" {
      for_each = each.value.kind == "all" ? [each.value.plural] : []
      content {
        object_type_plural = all.value
        in_schema          = snowflake_schema.this["ANALYTICS_COMPLIANCE"].fully_qualified_name
      }
    }
    dynamic "future" {
      for_each = each.value.kind == "future" ? [each.value.plural] : []
      content {
        object_type_plural = future.value
        in_schema          = snowflake_schema.this["ANALYTICS_COMPLIANCE"].fully_qualified_name
      }
    }
  }
}

# --- masking ------------------------------------------------------------------------------

# current_role(), not is_role_in_session(): an investigator must `use role` deliberately, so
# query history records it (docs/COMPLIANCE.md). Same rule as the dbt macro mask_personal.
resource "snowflake_masking_policy" "personal_text" {
  name     = "PERSONAL_TEXT"
  database = snowflake_database.governance.name
  schema   = snowflake_schema.policies.name
  argument {
    name = "VAL"
    type = "VARCHAR"
  }
  return_data_type = "VARCHAR"
  body             = "case when current_role() = '${var.investigator_role}' then VAL else '***masked***' end"
  comment          = "Personal columns (data class `personal`) of the audit tables"
}

# The audit tables are Iceberg tables of the lake (created through the Glue catalog
# integration, not by Terraform), so the policy is set on their columns by statement.
resource "snowflake_execute" "mask_columns" {
  for_each = var.masked_columns
  execute = join("; ", [for column in each.value :
  "alter iceberg table ${snowflake_database.mercury.name}.${each.key} modify column ${column} set masking policy ${snowflake_masking_policy.personal_text.fully_qualified_name}"])
  revert = join("; ", [for column in each.value :
  "alter iceberg table ${snowflake_database.mercury.name}.${each.key} modify column ${column} unset masking policy"])
}

# --- warehouses ---------------------------------------------------------------------------

resource "snowflake_warehouse" "this" {
  for_each            = var.warehouses
  name                = each.key
  warehouse_size      = each.value
  auto_suspend        = 60
  auto_resume         = true
  initially_suspended = true
}

resource "snowflake_grant_privileges_to_account_role" "warehouse_usage" {
  for_each = {
    transformer = { role = var.transformer_role, warehouse = "TRANSFORM_WH" }
    analyst     = { role = var.analyst_role, warehouse = "COMPLIANCE_WH" }
  }
  account_role_name = snowflake_account_role.this[each.value.role].name
  privileges        = ["USAGE"]
  on_account_object {
    object_type = "WAREHOUSE"
    object_name = snowflake_warehouse.this[each.value.warehouse].name
  }
}
