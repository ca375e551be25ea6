output "vpc_id" {
  value = aws_vpc.this.id
}

output "vpc_cidr_block" {
  value = aws_vpc.this.cidr_block
}

output "private_subnet_ids" {
  description = "One private subnet per AZ, in AZ order."
  value       = aws_subnet.private[*].id
}

output "azs" {
  value = local.azs
}

output "internal_zone_id" {
  value = aws_route53_zone.internal.zone_id
}

output "internal_zone_name" {
  value = aws_route53_zone.internal.name
}
