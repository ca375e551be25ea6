variable "name" {
  description = "Prefix of the key aliases (alias/<name>-<purpose>)."
  type        = string
}

variable "region" {
  description = "AWS region (the CloudWatch Logs service principal is regional)."
  type        = string
}

variable "purposes" {
  description = "One key per purpose: purpose -> description. `logs` gets the CloudWatch Logs grant."
  type        = map(string)
  validation {
    condition     = contains(keys(var.purposes), "logs")
    error_message = "purposes must include `logs`: every log group is encrypted with it."
  }
}
