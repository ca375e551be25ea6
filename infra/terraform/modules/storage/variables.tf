variable "bucket_prefix" {
  description = "Bucket names are <prefix>-<bucket key> (S3 names are global: one prefix per region)."
  type        = string
}

variable "account_id" {
  description = "The account whose buckets may log into the access-log bucket."
  type        = string
}

variable "buckets" {
  description = <<-EOT
    Bucket key -> its KMS key, how long noncurrent versions live, which prefixes expire after
    how many days, and which move to Intelligent-Tiering after how many days.
  EOT
  type = map(object({
    kms_key_arn       = string
    noncurrent_days   = number
    expire_after_days = map(number)
    tier_after_days   = map(number)
  }))
  validation {
    # GDPR (MISSION: deletion within 30 days): a deleted object's old version must go too.
    condition     = alltrue([for b in values(var.buckets) : b.noncurrent_days <= 30])
    error_message = "noncurrent_days must be at most 30: deleted personal data must be gone within the GDPR's 30 days."
  }
}

variable "access_log_retention_days" {
  description = "How long S3 access logs are kept."
  type        = number
}
