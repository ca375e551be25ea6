output "masking_policy" {
  value = snowflake_masking_policy.personal_text.fully_qualified_name
}

output "roles" {
  value = sort(keys(snowflake_account_role.this))
}
