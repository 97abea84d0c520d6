output "client_endpoint" {
  description = "The client API through the load balancer (for --endpoint and the SDK)."
  value       = "${local.scheme}://${aws_lb.compute.dns_name}:${local.ports.compute_grpc}"
}

output "compute_endpoints" {
  description = "Each compute's client API, primary first: list them all (comma-separated) so the SDK fails over by itself."
  value       = [for eni in aws_network_interface.compute : "${local.scheme}://${eni.private_ip}:${local.ports.compute_grpc}"]
}

output "safekeeper_endpoints" {
  description = "The safekeepers' gRPC endpoints."
  value       = local.safekeeper_urls
}

output "pageserver_endpoint" {
  description = "The pageserver's gRPC endpoint."
  value       = local.pageserver_url
}

output "admin_endpoints" {
  description = "Every process's admin HTTP API (for `ferrisdb admin --endpoint` and Prometheus), by component name."
  value = merge(
    { for i, ip in local.safekeeper_ips : "safekeeper-${i + 1}" => "${local.scheme}://${ip}:${local.ports.safekeeper_http}" },
    { pageserver = "${local.scheme}://${local.pageserver_ip}:${local.ports.pageserver_http}" },
    { for i, eni in aws_network_interface.compute : "compute-${i + 1}" => "${local.scheme}://${eni.private_ip}:${local.ports.compute_http}" },
  )
}

output "object_store" {
  description = "The object store URL every component uses."
  value       = local.object_store
}

output "bucket_name" {
  description = "The bucket."
  value       = aws_s3_bucket.this.bucket
}

output "instance_role_arn" {
  description = "The instances' IAM role."
  value       = aws_iam_role.this.arn
}

output "security_group_ids" {
  description = "The security groups, by component (safekeeper, pageserver, compute, nlb)."
  value       = local.sg
}
