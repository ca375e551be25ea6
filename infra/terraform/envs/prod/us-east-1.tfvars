# North America. use1-az3 is left out: it lacks several current instance families.
region                    = "us-east-1"
name                      = "mercury-use1"
az_ids                    = ["use1-az1", "use1-az2", "use1-az4"]
vpc_cidr_block            = "10.41.0.0/16"
bucket_prefix             = "mercurypay-use1"
flink_image_tag           = "online-features-2.3.0-1"
schema_registry_image_tag = "cp-schema-registry-8.0.0-msk-iam-1"
