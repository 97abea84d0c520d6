output "client_endpoint" {
  description = "ferrisdb --endpoint …"
  value       = module.ferrisdb.client_endpoint
}

output "compute_endpoints" {
  description = "Every compute, primary first (the SDK fails over between them)."
  value       = module.ferrisdb.compute_endpoints
}

output "admin_endpoints" {
  description = "Admin APIs by component."
  value       = module.ferrisdb.admin_endpoints
}

output "secret_ids" {
  description = "Where to put the credentials."
  value       = { for k, s in aws_secretsmanager_secret.token : k => s.id }
}
