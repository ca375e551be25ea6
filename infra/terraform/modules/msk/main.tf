# MSK: three brokers, one per AZ (replication factor 3, min in-sync 2: a lost AZ keeps every
# partition writable), TLS everywhere, IAM auth for the JVM clients (Flink, Spark) and for
# Terraform's topic management, SASL/SCRAM for the librdkafka clients (config/production.yaml:
# the Python loaders, replay, CDC pump, audit shipper) until they sign IAM tokens themselves.
# Tiered storage: a week of the audit stream does not fit three brokers' disks (CAPACITY.md).

resource "aws_security_group" "this" {
  name        = "${var.name}-msk"
  description = "MSK brokers: Kafka over TLS from inside the VPC only"
  vpc_id      = var.vpc_id
}

resource "aws_vpc_security_group_ingress_rule" "clients" {
  for_each = {
    tls   = 9094
    scram = 9096
    iam   = 9098
  }
  security_group_id = aws_security_group.this.id
  description       = "Kafka clients in the VPC (${each.key} listener)"
  cidr_ipv4         = var.client_cidr_block
  ip_protocol       = "tcp"
  from_port         = each.value
  to_port           = each.value
}

resource "aws_vpc_security_group_egress_rule" "in_vpc" {
  security_group_id = aws_security_group.this.id
  description       = "Brokers reach each other (replication) inside the VPC only"
  cidr_ipv4         = var.client_cidr_block
  ip_protocol       = "tcp"
  from_port         = 9092
  to_port           = 9098
}

resource "aws_msk_configuration" "this" {
  name           = "${var.name}-brokers"
  kafka_versions = [var.kafka_version]
  # Why each: topics only from the registry (a typo must not create a topic); RF 3 over the
  # three AZs with 2 in sync, so acks=all survives one AZ; never elect a stale leader (it
  # would lose acknowledged events); ACLs deny by default for the SCRAM users.
  server_properties = <<-EOT
    auto.create.topics.enable=false
    default.replication.factor=3
    min.insync.replicas=2
    unclean.leader.election.enable=false
    allow.everyone.if.no.acl.found=false
    num.replica.fetchers=4
    replica.lag.time.max.ms=30000
  EOT
}

resource "aws_cloudwatch_log_group" "brokers" {
  name              = "/mercury/${var.name}/msk"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.logs_kms_key_arn
}

resource "aws_msk_cluster" "this" {
  cluster_name           = var.name
  kafka_version          = var.kafka_version
  number_of_broker_nodes = var.broker_count
  storage_mode           = "TIERED"

  broker_node_group_info {
    instance_type   = var.broker_instance_type
    client_subnets  = var.subnet_ids
    security_groups = [aws_security_group.this.id]
    storage_info {
      ebs_storage_info {
        volume_size = var.broker_volume_gib
        provisioned_throughput {
          enabled           = true
          volume_throughput = var.broker_volume_throughput_mibps
        }
      }
    }
    connectivity_info {
      public_access {
        type = "DISABLED"
      }
    }
  }

  configuration_info {
    arn      = aws_msk_configuration.this.arn
    revision = aws_msk_configuration.this.latest_revision
  }

  encryption_info {
    encryption_at_rest_kms_key_arn = var.kms_key_arn
    encryption_in_transit {
      client_broker = "TLS"
      in_cluster    = true
    }
  }

  client_authentication {
    unauthenticated = false
    sasl {
      iam   = true
      scram = true
    }
  }

  # Per-partition metrics: consumer lag per partition is the freshness alert's input.
  enhanced_monitoring = "PER_TOPIC_PER_PARTITION"

  open_monitoring {
    prometheus {
      jmx_exporter {
        enabled_in_broker = true
      }
      node_exporter {
        enabled_in_broker = true
      }
    }
  }

  logging_info {
    broker_logs {
      cloudwatch_logs {
        enabled   = true
        log_group = aws_cloudwatch_log_group.brokers.name
      }
    }
  }
}

# SCRAM users' secrets (named AmazonMSK_*, encrypted with a customer key) are created and
# filled by the security team, never by this code: their ARNs are associated here.
resource "aws_msk_scram_secret_association" "this" {
  count           = length(var.scram_secret_arns) > 0 ? 1 : 0
  cluster_arn     = aws_msk_cluster.this.arn
  secret_arn_list = var.scram_secret_arns
}
