# The Glue Data Catalog is the Iceberg catalog in production (config: lake.catalog_type glue).
# One database per lake namespace the code writes (mercury/contracts/registry.py lake tables,
# the feature history, quality and compliance tables), each located in its bucket.

resource "aws_glue_catalog_database" "this" {
  for_each     = var.databases
  name         = each.key
  description  = each.value.description
  location_uri = each.value.location_uri
}

# Table metadata (column names, comments) is encrypted, and connection passwords too.
resource "aws_glue_data_catalog_encryption_settings" "this" {
  data_catalog_encryption_settings {
    encryption_at_rest {
      catalog_encryption_mode = "SSE-KMS"
      sse_aws_kms_key_id      = var.kms_key_arn
    }
    connection_password_encryption {
      return_connection_password_encrypted = true
      aws_kms_key_id                       = var.kms_key_arn
    }
  }
}
