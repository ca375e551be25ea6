variable "database" {
  description = "The platform's database (dbt's SNOWFLAKE_DATABASE)."
  type        = string
}

variable "transformer_role" {
  description = "dbt's role; owns the objects it builds."
  type        = string
}

variable "analyst_role" {
  type = string
}

variable "investigator_role" {
  description = "The one role that sees personal values (dbt var compliance_role)."
  type        = string
}

variable "masked_columns" {
  description = "SCHEMA.TABLE -> its personal columns (data class `personal` in the contracts)."
  type        = map(list(string))
}

variable "warehouses" {
  description = "Warehouse name -> size. TRANSFORM_WH (dbt) and COMPLIANCE_WH (analysts) are granted."
  type        = map(string)
  validation {
    condition     = contains(keys(var.warehouses), "TRANSFORM_WH") && contains(keys(var.warehouses), "COMPLIANCE_WH")
    error_message = "warehouses must include TRANSFORM_WH and COMPLIANCE_WH."
  }
}
