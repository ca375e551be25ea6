# What config/production.yaml and the deploy pipeline need from this stack.

output "kafka_bootstrap_servers_scram" {
  description = "event_log.bootstrap_servers (Python clients, SASL/SCRAM)."
  value       = module.msk.bootstrap_brokers_scram
}

output "kafka_bootstrap_servers_iam" {
  description = "Flink and Spark (IAM)."
  value       = module.msk.bootstrap_brokers_iam
}

output "kafka_topics" {
  value = module.kafka_topics.topic_names
}

output "redis_configuration_endpoint" {
  description = "online_store.host"
  value       = module.redis.configuration_endpoint
}

output "redis_auth_secret_arn" {
  description = "Injected into pods as MERCURY_REDIS_AUTH."
  value       = module.redis.auth_secret_arn
}

output "opensearch_endpoint" {
  description = "retrieval.index.hosts"
  value       = module.opensearch.endpoint
}

output "opensearch_master_secret_arn" {
  value = module.opensearch.master_secret_arn
}

output "flink_rest_url" {
  description = "flink.rest_url"
  value       = module.flink.rest_url
}

output "flink_image_repository" {
  value = module.flink.image_repository_url
}

output "flink_job_role_arn" {
  value = module.flink.job_role_arn
}

output "emr_application_id" {
  value = module.emr_serverless.application_id
}

output "emr_job_role_arn" {
  value = module.emr_serverless.job_role_arn
}

output "mwaa_webserver_url" {
  value = module.mwaa.webserver_url
}

output "buckets" {
  description = "lake.warehouse is s3://<lake>/warehouse; privacy.keyring_uri is s3://<privacy-keys>/keyring/privacy.json."
  value       = module.storage.bucket_names
}

output "kms_key_arns" {
  description = "privacy.kms_key_id_env (MERCURY_KMS_KEY_ARN) takes the privacy key."
  value       = module.kms.key_arns
}

output "workload_role_arns" {
  value = module.workload_roles.role_arns
}

output "snowflake_masking_policy" {
  value = module.snowflake.masking_policy
}

output "schema_registry_url" {
  description = "event_log.schema_registry_url"
  value       = module.schema_registry.url
}

output "schema_registry_image_repository" {
  value = module.schema_registry.image_repository_url
}

output "postgres_endpoint" {
  description = "postgres.host, privacy.user_keys_postgres.host and ops_state.postgres.host (the writer)."
  value       = module.postgres.endpoint
}

output "postgres_secret_arns" {
  description = "Role -> secret: mercury_cdc (MERCURY_PG_PASSWORD), mercury_keys (MERCURY_KEYS_PG_PASSWORD), mercury_ops (MERCURY_OPS_PG_PASSWORD)."
  value       = module.postgres.service_secret_arns
}

output "prometheus_endpoint" {
  value = module.monitoring.prometheus_endpoint
}

output "alertmanager_url" {
  description = "monitoring.alertmanager_url (AMP's Alertmanager; requests are SigV4-signed)."
  value       = module.monitoring.alertmanager_url
}

output "alert_topic_arns" {
  value = module.monitoring.alert_topic_arns
}

output "grafana_endpoint" {
  value = module.monitoring.grafana_endpoint
}
