variable "databases" {
  description = "Glue database name -> description and S3 location (s3://bucket/warehouse/<name>)."
  type = map(object({
    description  = string
    location_uri = string
  }))
}

variable "kms_key_arn" {
  description = "KMS key encrypting the catalog's metadata."
  type        = string
}
