# The instances: three safekeepers (one per subnet, so one per availability zone) with an
# encrypted WAL volume each, a pageserver with an encrypted cache volume, and the computes.

locals {
  tls_parameters = local.tls ? {
    "tls.pem" = var.tls.cert_parameter
    "tls.key" = var.tls.key_parameter
    "ca.pem"  = var.tls.ca_parameter
  } : {}

  user_data = {
    safekeeper = [for i in range(3) : templatefile("${path.module}/templates/cloud-init.yaml.tftpl", {
      component      = "safekeeper"
      args           = join(" ", local.safekeeper_args[i])
      region         = local.region
      secrets        = { cluster = local.secrets.cluster, admin = local.secrets.admin }
      tls_parameters = local.tls_parameters
      data_device    = "/dev/sdf"
      binary_url     = var.ferrisdb_binary_url
      binary_sha256  = var.ferrisdb_binary_sha256
    })]
    pageserver = templatefile("${path.module}/templates/cloud-init.yaml.tftpl", {
      component      = "pageserver"
      args           = join(" ", local.pageserver_args)
      region         = local.region
      secrets        = { cluster = local.secrets.cluster, admin = local.secrets.admin }
      tls_parameters = local.tls_parameters
      data_device    = "/dev/sdf"
      binary_url     = var.ferrisdb_binary_url
      binary_sha256  = var.ferrisdb_binary_sha256
    })
    compute = [for i in range(var.compute_count) : templatefile("${path.module}/templates/cloud-init.yaml.tftpl", {
      component      = "compute"
      args           = join(" ", local.compute_args[i])
      region         = local.region
      secrets        = local.secrets
      tls_parameters = local.tls_parameters
      data_device    = null
      binary_url     = var.ferrisdb_binary_url
      binary_sha256  = var.ferrisdb_binary_sha256
    })]
  }
}

resource "aws_instance" "safekeeper" {
  count                = 3
  ami                  = var.ami_id
  instance_type        = var.safekeeper_instance_type
  iam_instance_profile = aws_iam_instance_profile.this.name
  user_data            = local.user_data.safekeeper[count.index]
  ebs_optimized        = true
  monitoring           = var.detailed_monitoring

  network_interface {
    network_interface_id = aws_network_interface.safekeeper[count.index].id
    device_index         = 0
  }
  metadata_options {
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
    http_endpoint               = "enabled"
  }
  root_block_device {
    encrypted   = true
    kms_key_id  = local.kms_key_arn
    volume_type = "gp3"
    volume_size = var.root_volume_gb
  }
  # The WAL: kept when the instance is replaced, so a safekeeper comes back with its log.
  ebs_block_device {
    device_name           = "/dev/sdf"
    volume_type           = "gp3"
    volume_size           = var.safekeeper_volume_gb
    encrypted             = true
    kms_key_id            = local.kms_key_arn
    delete_on_termination = false
  }
  tags = merge(local.tags, { Name = "${var.name}-safekeeper-${count.index + 1}", "ferrisdb:component" = "safekeeper" })

  lifecycle {
    precondition {
      condition     = length(distinct([for s in slice(data.aws_subnet.selected, 0, 3) : s.availability_zone])) == 3
      error_message = "The first three subnet_ids must be in three different availability zones: a quorum must survive the loss of one."
    }
    precondition {
      condition     = (var.ferrisdb_binary_url == null) == (var.ferrisdb_binary_sha256 == null)
      error_message = "ferrisdb_binary_url and ferrisdb_binary_sha256 go together."
    }
  }
}

resource "aws_instance" "pageserver" {
  ami                  = var.ami_id
  instance_type        = var.pageserver_instance_type
  iam_instance_profile = aws_iam_instance_profile.this.name
  user_data            = local.user_data.pageserver
  ebs_optimized        = true
  monitoring           = var.detailed_monitoring

  network_interface {
    network_interface_id = aws_network_interface.pageserver.id
    device_index         = 0
  }
  metadata_options {
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
    http_endpoint               = "enabled"
  }
  root_block_device {
    encrypted   = true
    kms_key_id  = local.kms_key_arn
    volume_type = "gp3"
    volume_size = var.root_volume_gb
  }
  # A cache only: everything in it can be rebuilt from the bucket.
  ebs_block_device {
    device_name           = "/dev/sdf"
    volume_type           = "gp3"
    volume_size           = var.pageserver_cache_gb
    encrypted             = true
    kms_key_id            = local.kms_key_arn
    delete_on_termination = true
  }
  tags = merge(local.tags, { Name = "${var.name}-pageserver", "ferrisdb:component" = "pageserver" })
}

resource "aws_instance" "compute" {
  count                = var.compute_count
  ami                  = var.ami_id
  instance_type        = var.compute_instance_type
  iam_instance_profile = aws_iam_instance_profile.this.name
  user_data            = local.user_data.compute[count.index]
  ebs_optimized        = true
  monitoring           = var.detailed_monitoring

  network_interface {
    network_interface_id = aws_network_interface.compute[count.index].id
    device_index         = 0
  }
  metadata_options {
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
    http_endpoint               = "enabled"
  }
  root_block_device {
    encrypted   = true
    kms_key_id  = local.kms_key_arn
    volume_type = "gp3"
    volume_size = var.root_volume_gb
  }
  tags = merge(local.tags, { Name = "${var.name}-compute-${count.index + 1}", "ferrisdb:component" = "compute" })
}
