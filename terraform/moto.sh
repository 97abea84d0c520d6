#!/bin/sh
# A real `terraform apply` then `destroy` of modules/ferrisdb against moto (EC2, ELBv2, IAM,
# KMS, S3, Secrets Manager, SSM and STS emulated on loopback): every resource is created
# through the provider's real API calls, and the outputs are read back. Nothing reaches AWS.
#
#   terraform/moto.sh        # needs terraform, python3; installs moto[server] when missing
set -eu
here=$(cd "$(dirname "$0")" && pwd)
export TF_CLI_CONFIG_FILE=/dev/null
export TF_IN_AUTOMATION=1
work=$(mktemp -d)
export TF_DATA_DIR="$work/tf"
state="$work/terraform.tfstate"

command -v moto_server >/dev/null || python3 -m pip install --quiet 'moto[server]'
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
moto_server -H 127.0.0.1 -p "$port" >"$work/moto.log" 2>&1 &
moto=$!
cleanup() { kill "$moto" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT INT TERM
for _ in $(seq 50); do
    curl -fs -o /dev/null "http://127.0.0.1:$port/" && break
    sleep 0.2
done

plugin=$(find /opt /usr/local /usr/share "$HOME/.terraform.d" -path '*/registry.terraform.io/hashicorp/aws/*' -name 'terraform-provider-aws*' 2>/dev/null | head -n 1 || true)
init_flags=""
[ -n "$plugin" ] && init_flags="-plugin-dir=$(dirname "$(dirname "$(dirname "$(dirname "$(dirname "$(dirname "$plugin")")")")")")"

cd "$here/moto"
# shellcheck disable=SC2086
terraform init -backend=false -input=false -no-color $init_flags >/dev/null
vars="-var endpoint=http://127.0.0.1:$port -state=$state -input=false -no-color"
echo "== apply against moto on 127.0.0.1:$port"
# shellcheck disable=SC2086
terraform apply -auto-approve $vars
# shellcheck disable=SC2086
created=$(terraform state list -state="$state" | wc -l)
echo "== $created resources in the state"
[ "$created" -ge 60 ] || { echo "expected the whole cluster, got $created resources" >&2; exit 1; }
# The bucket really exists on the emulated S3.
bucket=$(terraform output -state="$state" -raw bucket_name)
curl -fs -o /dev/null "http://127.0.0.1:$port/$bucket" || { echo "bucket $bucket missing" >&2; exit 1; }

# moto keeps a terminated instance's primary network interface attached and refuses to
# detach device index 0 (AWS detaches it at termination), so the interfaces cannot be
# deleted there: forget them first (their deletion is not checked here) and destroy the rest.
terraform state list -state="$state" | grep 'aws_network_interface' |
    xargs terraform state rm -state="$state" >/dev/null
echo "== destroy (all but the network interfaces, which moto cannot detach)"
# shellcheck disable=SC2086
terraform destroy -auto-approve $vars
left=$(terraform state list -state="$state" | wc -l)
[ "$left" -eq 0 ] || { echo "$left resources left after destroy" >&2; exit 1; }
echo "== applied and destroyed against moto"
