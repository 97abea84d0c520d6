variable "name" {
  description = "Prefix of every resource name (and of the bucket name when bucket_name is null)."
  type        = string
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}[a-z0-9]$", var.name))
    error_message = "name: 3 to 32 characters, lower-case letters, digits and hyphens, starting with a letter."
  }
}

variable "vpc_id" {
  description = "The VPC the cluster runs in."
  type        = string
  validation {
    condition     = can(regex("^vpc-[0-9a-f]+$", var.vpc_id))
    error_message = "vpc_id must look like vpc-0123abcd."
  }
}

variable "subnet_ids" {
  description = "Private subnets in at least three availability zones: safekeeper i runs in subnet i, the pageserver in the first, computes spread over all."
  type        = list(string)
  validation {
    condition     = length(var.subnet_ids) >= 3 && length(distinct(var.subnet_ids)) == length(var.subnet_ids)
    error_message = "subnet_ids: at least three distinct subnets (the three safekeepers need three availability zones)."
  }
  validation {
    condition     = alltrue([for s in var.subnet_ids : can(regex("^subnet-[0-9a-f]+$", s))])
    error_message = "subnet_ids must look like subnet-0123abcd."
  }
}

variable "nlb_subnet_ids" {
  description = "Subnets of the network load balancer in front of the computes (default: subnet_ids)."
  type        = list(string)
  default     = null
}

variable "nlb_internal" {
  description = "Whether the load balancer is internal (reachable only inside the VPC and what is peered with it)."
  type        = bool
  default     = true
}

variable "deletion_protection" {
  description = "Protect the load balancer from deletion (turn off to destroy the cluster)."
  type        = bool
  default     = true
}

variable "client_cidrs" {
  description = "CIDR blocks allowed to reach the client port (4500) through the load balancer. Nothing else reaches any FerrisDB port from outside the cluster."
  type        = list(string)
  validation {
    condition     = length(var.client_cidrs) > 0 && alltrue([for c in var.client_cidrs : can(cidrnetmask(c))])
    error_message = "client_cidrs: one or more IPv4 CIDR blocks, e.g. 10.0.0.0/16."
  }
  validation {
    condition     = !contains(var.client_cidrs, "0.0.0.0/0")
    error_message = "client_cidrs must not be 0.0.0.0/0: name the networks your applications run in."
  }
}

variable "admin_cidrs" {
  description = "CIDR blocks allowed to reach the admin HTTP ports (operators, Prometheus). Default: none beyond the cluster itself."
  type        = list(string)
  default     = []
  validation {
    condition     = alltrue([for c in var.admin_cidrs : can(cidrnetmask(c)) && c != "0.0.0.0/0"])
    error_message = "admin_cidrs: IPv4 CIDR blocks, never 0.0.0.0/0."
  }
}

variable "egress_cidrs" {
  description = "Where instances may open HTTPS connections (S3, Secrets Manager, the binary download). Narrow it to your VPC endpoints' ranges when you have them."
  type        = list(string)
  default     = ["0.0.0.0/0"]
  validation {
    condition     = length(var.egress_cidrs) > 0 && alltrue([for c in var.egress_cidrs : can(cidrnetmask(c))])
    error_message = "egress_cidrs: one or more IPv4 CIDR blocks."
  }
}

variable "ami_id" {
  description = "AMI of every instance: a systemd Linux with cloud-init and the AWS CLI (Amazon Linux 2023), and /usr/local/bin/ferrisdb unless ferrisdb_binary_url is given."
  type        = string
  validation {
    condition     = can(regex("^ami-[0-9a-f]+$", var.ami_id))
    error_message = "ami_id must look like ami-0123abcd."
  }
}

variable "ferrisdb_binary_url" {
  description = "HTTPS URL of the ferrisdb binary to install at boot (null: the AMI has it)."
  type        = string
  default     = null
  validation {
    condition     = var.ferrisdb_binary_url == null || can(regex("^https://", var.ferrisdb_binary_url))
    error_message = "ferrisdb_binary_url must be an https:// URL."
  }
}

variable "ferrisdb_binary_sha256" {
  description = "SHA-256 of the binary at ferrisdb_binary_url (required with it)."
  type        = string
  default     = null
  validation {
    condition     = var.ferrisdb_binary_sha256 == null || can(regex("^[0-9a-f]{64}$", var.ferrisdb_binary_sha256))
    error_message = "ferrisdb_binary_sha256: 64 lower-case hex digits."
  }
}

variable "safekeeper_instance_type" {
  description = "Instance type of the safekeepers."
  type        = string
  default     = "m6i.large"
}

variable "pageserver_instance_type" {
  description = "Instance type of the pageserver."
  type        = string
  default     = "r6i.large"
}

variable "compute_instance_type" {
  description = "Instance type of the computes."
  type        = string
  default     = "c6i.large"
}

variable "compute_count" {
  description = "Computes behind the load balancer: the first is the primary, the others standbys that take over when it dies (a standby refuses commits with read_only until then; see README)."
  type        = number
  default     = 1
  validation {
    condition     = var.compute_count >= 1 && var.compute_count <= 8 && floor(var.compute_count) == var.compute_count
    error_message = "compute_count: a whole number from 1 to 8."
  }
}

variable "detailed_monitoring" {
  description = "One-minute CloudWatch metrics for every instance."
  type        = bool
  default     = true
}

variable "root_volume_gb" {
  description = "Size of every instance's root volume (gp3), in GiB; the computes' warm tier lives there."
  type        = number
  default     = 20
  validation {
    condition     = var.root_volume_gb >= 8
    error_message = "root_volume_gb: at least 8."
  }
}

variable "safekeeper_volume_gb" {
  description = "Size of each safekeeper's WAL volume (gp3), in GiB."
  type        = number
  default     = 100
  validation {
    condition     = var.safekeeper_volume_gb >= 10 && var.safekeeper_volume_gb <= 16384
    error_message = "safekeeper_volume_gb: from 10 to 16384."
  }
}

variable "pageserver_cache_gb" {
  description = "Size of the pageserver's cache volume (gp3), in GiB; the block cache uses 90% of it."
  type        = number
  default     = 200
  validation {
    condition     = var.pageserver_cache_gb >= 10 && var.pageserver_cache_gb <= 16384
    error_message = "pageserver_cache_gb: from 10 to 16384."
  }
}

variable "safekeeper_private_ips" {
  description = "Fixed private IPs of the three safekeepers, one in each subnet (null: assigned by AWS). Fix them when TLS certificates must name them."
  type        = list(string)
  default     = null
  validation {
    condition     = var.safekeeper_private_ips == null || try(length(var.safekeeper_private_ips) == 3 && alltrue([for ip in var.safekeeper_private_ips : can(cidrhost("${ip}/32", 0))]), false)
    error_message = "safekeeper_private_ips: three IPv4 addresses, or null."
  }
}

variable "pageserver_private_ip" {
  description = "Fixed private IP of the pageserver in the first subnet (null: assigned by AWS)."
  type        = string
  default     = null
}

variable "bucket_name" {
  description = "Name of the bucket to create (null: <name>-ferrisdb-<account id>)."
  type        = string
  default     = null
}

variable "bucket_prefix" {
  description = "Prefix of every object FerrisDB writes in the bucket."
  type        = string
  default     = "cluster"
  validation {
    condition     = can(regex("^[a-zA-Z0-9][a-zA-Z0-9/_-]*$", var.bucket_prefix))
    error_message = "bucket_prefix: letters, digits, /, _ and -, not starting with /."
  }
}

variable "access_log_bucket" {
  description = "A bucket to receive the data bucket's S3 server access logs (null: none; CloudTrail data events are the other way to audit)."
  type        = string
  default     = null
}

variable "noncurrent_version_days" {
  description = "Days an overwritten or deleted object version is kept (versioning guards against a bad write or delete)."
  type        = number
  default     = 30
  validation {
    condition     = var.noncurrent_version_days >= 1
    error_message = "noncurrent_version_days: at least 1."
  }
}

variable "cluster_token_secret_arn" {
  description = "Secrets Manager secret holding the cluster credential (`openssl rand -hex 32`; one token a line)."
  type        = string
  validation {
    condition     = can(regex("^arn:aws[a-z-]*:secretsmanager:", var.cluster_token_secret_arn))
    error_message = "cluster_token_secret_arn must be a Secrets Manager secret ARN."
  }
}

variable "admin_token_secret_arn" {
  description = "Secrets Manager secret holding the admin API tokens (one a line)."
  type        = string
  validation {
    condition     = can(regex("^arn:aws[a-z-]*:secretsmanager:", var.admin_token_secret_arn))
    error_message = "admin_token_secret_arn must be a Secrets Manager secret ARN."
  }
}

variable "client_token_secret_arn" {
  description = "Secrets Manager secret holding the client tokens the computes accept (one a line)."
  type        = string
  validation {
    condition     = can(regex("^arn:aws[a-z-]*:secretsmanager:", var.client_token_secret_arn))
    error_message = "client_token_secret_arn must be a Secrets Manager secret ARN."
  }
}

variable "tls" {
  description = "TLS on every listener: SSM SecureString parameter names of the PEM certificate chain, private key and CA (null: no TLS). The certificate must name the addresses peers dial (see safekeeper_private_ips) and the load balancer's name."
  type = object({
    cert_parameter = string
    key_parameter  = string
    ca_parameter   = string
  })
  default = null
  validation {
    condition     = var.tls == null || try(alltrue([for p in values(var.tls) : can(regex("^/", p))]), false)
    error_message = "tls: SSM parameter names start with /."
  }
}

variable "kms_key_arn" {
  description = "KMS key for the bucket, the volumes and the secrets (null: the module creates one with rotation on)."
  type        = string
  default     = null
}

variable "tags" {
  description = "Tags on every resource."
  type        = map(string)
  default     = {}
}
