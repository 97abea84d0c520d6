# `terraform test` with a mock AWS provider: no account, no network. Checks what the module
# promises (terraform/README.md): the bucket's protections, who may reach which port, three
# safekeepers in three zones, the ferrisdb command lines, and that bad inputs are refused.

mock_provider "aws" {
  mock_data "aws_caller_identity" {
    defaults = { account_id = "123456789012" }
  }
  mock_data "aws_region" {
    defaults = { name = "eu-west-1" }
  }
  mock_data "aws_partition" {
    defaults = { partition = "aws" }
  }
  mock_data "aws_iam_policy_document" {
    defaults = { json = "{\"Version\":\"2012-10-17\",\"Statement\":[]}" }
  }
  mock_resource "aws_kms_key" {
    defaults = { arn = "arn:aws:kms:eu-west-1:123456789012:key/mock" }
  }
  mock_resource "aws_s3_bucket" {
    defaults = { arn = "arn:aws:s3:::mock-bucket" }
  }
  mock_resource "aws_iam_role" {
    defaults = { arn = "arn:aws:iam::123456789012:role/mock" }
  }
  mock_resource "aws_lb" {
    defaults = { arn = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:loadbalancer/net/mock/1", dns_name = "mock-nlb.elb.eu-west-1.amazonaws.com" }
  }
  mock_resource "aws_network_interface" {
    defaults = { private_ip = "10.0.4.4" }
  }
  mock_resource "aws_lb_target_group" {
    defaults = { arn = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/mock/1" }
  }
}

override_data {
  target = data.aws_subnet.selected[0]
  values = { availability_zone = "eu-west-1a" }
}
override_data {
  target = data.aws_subnet.selected[1]
  values = { availability_zone = "eu-west-1b" }
}
override_data {
  target = data.aws_subnet.selected[2]
  values = { availability_zone = "eu-west-1c" }
}

variables {
  name                     = "test"
  vpc_id                   = "vpc-0abc"
  subnet_ids               = ["subnet-0a", "subnet-0b", "subnet-0c"]
  client_cidrs             = ["10.1.0.0/16", "10.2.0.0/16"]
  admin_cidrs              = ["10.9.0.0/24"]
  ami_id                   = "ami-0123"
  safekeeper_private_ips   = ["10.0.1.10", "10.0.2.10", "10.0.3.10"]
  pageserver_private_ip    = "10.0.1.20"
  cluster_token_secret_arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:cluster"
  admin_token_secret_arn   = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:admin"
  client_token_secret_arn  = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:client"
}

run "bucket_is_versioned_encrypted_and_private" {
  command = plan

  assert {
    condition     = aws_s3_bucket_versioning.this.versioning_configuration[0].status == "Enabled"
    error_message = "versioning must be on"
  }
  assert {
    condition     = one(one(aws_s3_bucket_server_side_encryption_configuration.this.rule).apply_server_side_encryption_by_default).sse_algorithm == "aws:kms"
    error_message = "the bucket must be encrypted with KMS"
  }
  assert {
    condition = alltrue([
      aws_s3_bucket_public_access_block.this.block_public_acls,
      aws_s3_bucket_public_access_block.this.block_public_policy,
      aws_s3_bucket_public_access_block.this.ignore_public_acls,
      aws_s3_bucket_public_access_block.this.restrict_public_buckets,
    ])
    error_message = "every public access must be blocked"
  }
  assert {
    condition     = aws_s3_bucket.this.bucket == "test-ferrisdb-123456789012"
    error_message = "default bucket name"
  }
}

run "ports_open_only_where_they_must" {
  command = plan

  # The client port: from the client CIDRs to the load balancer, and nowhere else from outside.
  assert {
    condition     = toset([for r in aws_vpc_security_group_ingress_rule.client : r.cidr_ipv4]) == toset(var.client_cidrs)
    error_message = "the client port must be open to exactly client_cidrs"
  }
  assert {
    condition     = alltrue([for r in aws_vpc_security_group_ingress_rule.client : r.from_port == 4500 && r.to_port == 4500])
    error_message = "only the client port is open to clients"
  }
  # Internal gRPC ports only from other components' security groups, never from CIDRs.
  assert {
    condition     = alltrue([for r in aws_vpc_security_group_ingress_rule.internal : r.cidr_ipv4 == null])
    error_message = "internal ports must be opened by security group only"
  }
  assert {
    condition     = length([for k, r in aws_vpc_security_group_ingress_rule.internal : k if r.from_port == 4501]) == 3
    error_message = "the safekeepers' gRPC port: computes, the pageserver and the other safekeepers"
  }
  assert {
    condition     = length([for k, r in aws_vpc_security_group_ingress_rule.internal : k if r.from_port == 4510]) == 1
    error_message = "the pageserver's gRPC port: computes only"
  }
  # Admin ports: only the admin CIDRs (one rule per component kind and CIDR).
  assert {
    condition     = length(aws_vpc_security_group_ingress_rule.admin) == 3 && alltrue([for r in aws_vpc_security_group_ingress_rule.admin : r.cidr_ipv4 == "10.9.0.0/24"])
    error_message = "admin ports open to admin_cidrs only"
  }
  assert {
    condition     = alltrue([for r in aws_vpc_security_group_egress_rule.https : r.from_port == 443])
    error_message = "outbound to CIDRs is HTTPS only"
  }
}

run "three_safekeepers_in_three_zones_with_wal_volumes" {
  command = plan

  assert {
    condition     = length([for k, i in aws_instance.node : k if i.tags["ferrisdb:component"] == "safekeeper"]) == 3
    error_message = "three safekeepers"
  }
  assert {
    condition     = toset([for n in aws_network_interface.safekeeper : n.subnet_id]) == toset(var.subnet_ids)
    error_message = "one safekeeper per subnet"
  }
  assert {
    condition     = alltrue([for v in aws_ebs_volume.wal : v.encrypted && v.size == var.safekeeper_volume_gb])
    error_message = "safekeeper WAL volumes are encrypted, of the size asked"
  }
  assert {
    condition     = [for v in aws_ebs_volume.wal : v.availability_zone] == [for s in slice(data.aws_subnet.selected, 0, 3) : s.availability_zone]
    error_message = "each WAL volume is in its safekeeper's zone"
  }
  assert {
    condition     = alltrue([for k, i in aws_instance.node : length(i.ebs_block_device) == 0 if startswith(k, "safekeeper-")])
    error_message = "no safekeeper has a WAL volume of its own: a replaced instance would get an empty one"
  }
  assert {
    condition     = alltrue([for a in aws_volume_attachment.wal : a.device_name == "/dev/sdf" && a.stop_instance_before_detaching])
    error_message = "WAL volumes attach as /dev/sdf, detached only from a stopped instance"
  }
  assert {
    condition     = strcontains(aws_instance.node["safekeeper-1"].user_data, "ExecStartPre=/usr/bin/mountpoint -q /var/lib/ferrisdb") && !strcontains(aws_instance.node["compute-1"].user_data, "mountpoint")
    error_message = "a safekeeper never starts on the root disk"
  }
  assert {
    condition     = one(aws_instance.node["pageserver"].ebs_block_device).volume_size == 200
    error_message = "the pageserver has its cache volume"
  }
  assert {
    condition     = alltrue([for i in values(aws_instance.node) : i.metadata_options[0].http_tokens == "required"])
    error_message = "IMDSv2 only"
  }
}

run "cloud_init_runs_the_ferrisdb_subcommands" {
  command = apply

  assert {
    condition     = strcontains(aws_instance.node["safekeeper-2"].user_data, "ExecStart=/usr/local/bin/ferrisdb safekeeper --name safekeeper-2 --listen-grpc 0.0.0.0:4501 --listen-http 0.0.0.0:4581 --data-dir /var/lib/ferrisdb/safekeeper --peer http://10.0.1.10:4501 --peer http://10.0.3.10:4501 --object-store s3://test-ferrisdb-123456789012/cluster --s3-region eu-west-1 --cluster-token-file /etc/ferrisdb/cluster.token --admin-token-file /etc/ferrisdb/admin.token\n")
    error_message = "safekeeper-2's command line"
  }
  assert {
    condition     = strcontains(aws_instance.node["pageserver"].user_data, "ferrisdb pageserver --listen-grpc 0.0.0.0:4510") && strcontains(aws_instance.node["pageserver"].user_data, "--safekeeper http://10.0.3.10:4501")
    error_message = "the pageserver follows every safekeeper"
  }
  assert {
    condition     = strcontains(aws_instance.node["compute-1"].user_data, "--token-file /etc/ferrisdb/client.token") && strcontains(aws_instance.node["compute-1"].user_data, "--pageserver http://10.0.1.20:4510")
    error_message = "the compute requires client tokens and reads from the pageserver"
  }
  assert {
    condition     = strcontains(aws_instance.node["compute-1"].user_data, "secret-id 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:client'") && !strcontains(aws_instance.node["safekeeper-1"].user_data, "secret:client")
    error_message = "secrets come from Secrets Manager, each only where it is needed"
  }
  assert {
    condition     = !strcontains(aws_instance.node["compute-1"].user_data, "--tls-cert")
    error_message = "no TLS unless asked for"
  }
}

# After the cluster above was applied, a new AMI and a new binary replace and restart
# nothing: instances are rolled one at a time by the operator (README, "Upgrades").
run "an_upgrade_replaces_no_instance_by_itself" {
  command = plan

  variables {
    ami_id                 = "ami-0456"
    ferrisdb_binary_url    = "https://example.com/ferrisdb"
    ferrisdb_binary_sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
  }

  assert {
    condition     = alltrue([for i in values(aws_instance.node) : i.ami == "ami-0123" && !strcontains(i.user_data, "example.com")])
    error_message = "a new AMI or binary would replace or restart every instance at once"
  }
}

run "tls_and_standbys" {
  command = apply
  # A cluster of its own: the one above ignores changes to what cloud-init runs.
  state_key = "tls"

  variables {
    compute_count = 2
    tls = {
      cert_parameter = "/ferrisdb/test/tls.pem"
      key_parameter  = "/ferrisdb/test/tls.key"
      ca_parameter   = "/ferrisdb/test/ca.pem"
    }
  }

  assert {
    condition     = alltrue([for i in values(aws_instance.node) : strcontains(i.user_data, "--tls-cert /etc/ferrisdb/tls.pem --tls-key /etc/ferrisdb/tls.key --tls-ca /etc/ferrisdb/ca.pem")])
    error_message = "every process serves TLS"
  }
  assert {
    condition     = strcontains(aws_instance.node["safekeeper-1"].user_data, "--peer https://10.0.2.10:4501") && strcontains(aws_instance.node["safekeeper-1"].user_data, "ssm get-parameter --with-decryption --name '/ferrisdb/test/tls.key'")
    error_message = "peers are called over https; TLS material comes from SSM"
  }
  assert {
    condition     = strcontains(aws_instance.node["compute-2"].user_data, "--standby --primary-endpoint https://10.0.4.4:4500") && !strcontains(aws_instance.node["compute-1"].user_data, "--standby")
    error_message = "the second compute is a standby of the first"
  }
  assert {
    condition     = aws_lb_target_group.compute.health_check[0].protocol == "HTTPS"
    error_message = "health checks speak TLS too"
  }
}

run "outputs_name_the_endpoints" {
  command = apply

  assert {
    condition     = output.client_endpoint == "http://mock-nlb.elb.eu-west-1.amazonaws.com:4500"
    error_message = "client endpoint through the load balancer"
  }
  assert {
    condition     = output.safekeeper_endpoints == ["http://10.0.1.10:4501", "http://10.0.2.10:4501", "http://10.0.3.10:4501"]
    error_message = "safekeeper endpoints"
  }
  assert {
    condition     = output.object_store == "s3://test-ferrisdb-123456789012/cluster"
    error_message = "object store URL"
  }
  assert {
    condition     = length(output.admin_endpoints) == 5
    error_message = "an admin endpoint per process"
  }
}

run "refuses_an_open_client_port" {
  command = plan
  variables {
    client_cidrs = ["0.0.0.0/0"]
  }
  expect_failures = [var.client_cidrs]
}

run "refuses_fewer_than_three_subnets" {
  command = plan
  variables {
    subnet_ids = ["subnet-0a", "subnet-0b"]
  }
  expect_failures = [var.subnet_ids]
}

run "refuses_a_secret_that_is_not_secrets_manager" {
  command = plan
  variables {
    cluster_token_secret_arn = "arn:aws:ssm:eu-west-1:123456789012:parameter/x"
  }
  expect_failures = [var.cluster_token_secret_arn]
}

run "refuses_subnets_in_two_zones" {
  command = plan
  override_data {
    target = data.aws_subnet.selected[2]
    values = { availability_zone = "eu-west-1a" }
  }
  expect_failures = [aws_instance.node]
}
