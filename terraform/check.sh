#!/bin/sh
# Checks terraform/ offline: formatting, init against a local provider plugin directory,
# validate (module and example), `terraform test` (mock provider) and checkov (installed into
# a private virtualenv on first use). Exits non-zero on the first failure. tests/terraform.rs
# runs it when terraform is installed.
#
#   terraform/check.sh                 # everything
#   FERRISDB_TF_PLUGIN_DIR=DIR ...     # the folder above registry.terraform.io (else searched)
#   FERRISDB_SKIP_CHECKOV=1 ...        # without checkov (say so when reporting)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"

command -v terraform >/dev/null || { echo "terraform is not installed" >&2; exit 2; }
# No user configuration: the checks must not depend on ~/.terraformrc or the network.
export TF_CLI_CONFIG_FILE=/dev/null
export TF_IN_AUTOMATION=1

plugin_dir=${FERRISDB_TF_PLUGIN_DIR:-}
if [ -z "$plugin_dir" ]; then
    # Where images and users usually put them first, then everywhere (slow).
    plugin=$(find /opt /usr/local /usr/share "$HOME/.terraform.d" -path '*/registry.terraform.io/hashicorp/aws/*' -name 'terraform-provider-aws*' 2>/dev/null | head -n 1 || true)
    [ -n "$plugin" ] || plugin=$(find / -xdev -path '*/registry.terraform.io/hashicorp/aws/*' -name 'terraform-provider-aws*' 2>/dev/null | head -n 1 || true)
    # …/<plugin dir>/registry.terraform.io/hashicorp/aws/<version>/<os_arch>/terraform-provider-aws_…
    [ -n "$plugin" ] && plugin_dir=$(dirname "$(dirname "$(dirname "$(dirname "$(dirname "$(dirname "$plugin")")")")")")
fi
if [ -n "$plugin_dir" ]; then
    echo "== provider plugins from $plugin_dir"
    init_flags="-plugin-dir=$plugin_dir"
else
    echo "== no local provider plugin directory: terraform init downloads the provider"
    init_flags=""
fi

echo "== terraform fmt -check -recursive"
terraform fmt -check -recursive -diff .

for dir in modules/ferrisdb examples/aws; do
    echo "== $dir: init, validate"
    # shellcheck disable=SC2086
    (cd "$dir" && terraform init -backend=false -input=false -no-color $init_flags >/dev/null \
        && terraform validate -no-color)
done

echo "== modules/ferrisdb: terraform test"
(cd modules/ferrisdb && terraform test -no-color)

if [ "${FERRISDB_SKIP_CHECKOV:-}" = 1 ]; then
    echo "== checkov SKIPPED (FERRISDB_SKIP_CHECKOV=1)"
    exit 0
fi
tools=${FERRISDB_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ferrisdb-tools}
venv="$tools/checkov-venv"
if [ ! -x "$venv/bin/checkov" ]; then
    echo "== installing checkov into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check checkov
fi
echo "== checkov (every skip is justified beside the resource: grep -rn 'checkov:skip' terraform)"
# moto/ is not a deployment but the fixture of moto.sh: a throwaway VPC, and the module with
# what moto cannot emulate turned off (detailed monitoring, deletion protection, so that it
# can be destroyed). The module and the example are scanned with their real settings.
"$venv/bin/checkov" --directory . --framework terraform --skip-download --compact --quiet \
    --skip-path '\.terraform' --skip-path 'moto/' --download-external-modules false
