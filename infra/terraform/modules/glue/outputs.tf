output "database_arns" {
  value = { for name, db in aws_glue_catalog_database.this : name => db.arn }
}

output "database_names" {
  value = keys(aws_glue_catalog_database.this)
}
