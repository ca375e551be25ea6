# Every stream of mercury/contracts/registry.py as a topic on MSK. topics.json is rendered from
# the registry (python -m mercury.contracts.kafka_topics --write) and `mercury contracts check`
# fails when it is stale, so partitions and retention are never typed twice.
# The kafka provider talks to the brokers (IAM listener): plan/apply run from inside the VPC.

terraform {
  required_providers {
    kafka = {
      source = "Mongey/kafka"
    }
  }
}

locals {
  topics = jsondecode(file("${path.module}/topics.json")).topics
}

resource "kafka_topic" "this" {
  for_each           = local.topics
  name               = each.key
  partitions         = each.value.partitions
  replication_factor = each.value.replication_factor
  config             = each.value.config
}
