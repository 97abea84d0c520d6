variable "region" {
  description = "AWS region."
  type        = string
  default     = "eu-west-1"
}

variable "name" {
  description = "Cluster name (prefix of every resource)."
  type        = string
  default     = "demo"
}

variable "vpc_id" {
  description = "An existing VPC."
  type        = string
}

variable "subnet_ids" {
  description = "Three private subnets in three availability zones."
  type        = list(string)
}

variable "client_cidrs" {
  description = "Networks of the applications."
  type        = list(string)
}

variable "admin_cidrs" {
  description = "Networks of operators and Prometheus."
  type        = list(string)
  default     = []
}

variable "ami_id" {
  description = "Amazon Linux 2023 (or another systemd + cloud-init + AWS CLI image)."
  type        = string
}

variable "ferrisdb_binary_url" {
  description = "HTTPS URL of the ferrisdb binary (null: baked into the AMI)."
  type        = string
  default     = null
}

variable "ferrisdb_binary_sha256" {
  description = "Its SHA-256."
  type        = string
  default     = null
}
