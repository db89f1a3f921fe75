#!/usr/bin/env bash
# The CustomResourceDefinitions Serin needs on the local cluster:
#
# - SMI TrafficSplit (`split.smi-spec.io`), the router of the `linkerd` and `smi:v1alpha2`
#   providers. Taken from the Go module github.com/servicemeshinterface/smi-sdk-go
#   (SMI_SDK_VERSION in hack/versions.env), file crds/split.yaml. That file is an
#   apiextensions.k8s.io/v1beta1 CRD, which the API server no longer serves, so it is
#   converted mechanically to apiextensions.k8s.io/v1 (see `derive` below) and the result is
#   cached in .serin/crds/trafficsplits.json. Nothing in it is written by hand.
# - Gateway API (`gateway.networking.k8s.io`), the router of the `gatewayapi` provider: the
#   HTTPRoute CRD, what an HTTPRoute refers to (Gateway, GatewayClass, ReferenceGrant) and
#   the two kinds Traefik also watches (GRPCRoute, BackendTLSPolicy),
#   taken unchanged from config/crd/standard/ of the Go module sigs.k8s.io/gateway-api
#   (GATEWAY_API_VERSION in hack/versions.env), only labelled and annotated with their
#   source, and cached in .serin/crds/gateway-api.json.
# - Gloo (`gloo.solo.io` Upstream, `gateway.solo.io` RouteTable), the router of the `gloo`
#   provider. Gloo's own Go module is not served by the module proxy, so these two CRDs are
#   generated here by controller-gen (CONTROLLER_TOOLS_VERSION, built once by hack/deps.sh)
#   from the Go types of Gloo's API that Flagger keeps in its module github.com/fluxcd/flagger
#   (FLAGGER_VERSION), packages pkg/apis/gloo/{gloo,gateway}/v1, which carry +groupName
#   markers. Their sources are not touched; the only option is crd:allowDangerousTypes=true
#   (the Upstream's load-balancer settings have float fields). The schema is that typed
#   subset of Gloo's API, not Gloo's full one. Cached in .serin/crds/gloo.json.
# - Serin's own CRDs, manifests/crds.yaml (the output of `serin crds`), when that file exists.
#
# All are applied with the admin kubeconfig, and `up` returns once they are Established.
#
#   hack/crds.sh up       derive (if not cached), apply and wait
#   hack/crds.sh derive   only derive the TrafficSplit, Gateway API and Gloo CRDs; prints the paths
set -euo pipefail
source "$(dirname "$0")/lib.sh"
D=$STATE/crds
SMI_MODULE=github.com/servicemeshinterface/smi-sdk-go
SMI_SOURCE="$SMI_MODULE@$SMI_SDK_VERSION crds/split.yaml"
DERIVED=$D/trafficsplits.json
GATEWAY_MODULE=sigs.k8s.io/gateway-api
GATEWAY_DIR=config/crd/standard
# The HTTPRoute Serin writes, and the kinds an HTTPRoute refers to: its parent Gateway (with
# serin.dev/gateway), the Gateway's GatewayClass, and ReferenceGrants (backends in other
# namespaces); and the two other kinds Traefik (hack/traefik.sh, the local Gateway API
# implementation) watches and cannot start its Gateway provider without: GRPCRoutes and
# BackendTLSPolicies. The other route kinds and the upgrade ValidatingAdmissionPolicy are
# left out.
GATEWAY_CRDS="httproutes gateways gatewayclasses referencegrants grpcroutes backendtlspolicies"
GATEWAY_SOURCE="$GATEWAY_MODULE@$GATEWAY_API_VERSION $GATEWAY_DIR ($GATEWAY_CRDS)"
GATEWAY_DERIVED=$D/gateway-api.json
FLAGGER_MODULE=github.com/fluxcd/flagger
GLOO_PACKAGES="pkg/apis/gloo/gloo/v1 pkg/apis/gloo/gateway/v1"
GLOO_CRDS="upstreams.gloo.solo.io routetables.gateway.solo.io"
GLOO_SOURCE="$FLAGGER_MODULE@$FLAGGER_VERSION pkg/apis/gloo by controller-gen $CONTROLLER_TOOLS_VERSION"
GLOO_DERIVED=$D/gloo.json
CONTROLLER_GEN=$CACHE/controller-gen-$CONTROLLER_TOOLS_VERSION/bin/controller-gen
OWN_CRDS=$ROOT/manifests/crds.yaml
kubectl() { "$K8S_BIN/kubectl" --kubeconfig "$STATE/cluster/kubeconfig" "$@"; }

# module_dir MODULE VERSION: the module's directory in the Go module cache (downloaded once,
# verified against go.sum data by the go command).
module_dir() {
  mkdir -p "$D/gomod"   # an empty directory: outside any Go module
  (cd "$D/gomod" && GOFLAGS=${GOFLAGS:-} GOTOOLCHAIN=${GOTOOLCHAIN:-local} \
    go mod download -json "$1@$2") |
    python3 -c 'import json, sys; m = json.load(sys.stdin); print(m.get("Dir") or sys.exit(m.get("Error", "no Dir")))'
}

# cached FILE SOURCE: FILE exists, is newer than this script and was derived from SOURCE.
cached() {
  [ -f "$1" ] && [ "$1" -nt "$ROOT/hack/crds.sh" ] &&
    python3 -c 'import json, sys; d = json.load(open(sys.argv[1]))
items = d.get("items", [d])
sys.exit(not items or any(i["metadata"]["annotations"]["serin.dev/derived-from"] != sys.argv[2] for i in items))' "$1" "$2" 2>/dev/null
}

# yaml_to_json FILE: the YAML file's documents as one JSON array. PyYAML when python3 has
# it; else the built kubectl, which can print a file as JSON but only for an apiVersion the
# server serves, so the (otherwise unread) apiVersion line is renamed for it first.
yaml_to_json() {
  if python3 -c 'import yaml' 2>/dev/null; then
    python3 -c '
import json, sys, yaml
with open(sys.argv[1]) as f:
    print(json.dumps([d for d in yaml.safe_load_all(f) if d]))' "$1"
  else
    sed 's#^apiVersion: apiextensions\.k8s\.io/v1beta1$#apiVersion: apiextensions.k8s.io/v1#' "$1" |
      kubectl create --dry-run=client --validate=false -o json -f - | json_items
  fi
}

# The v1beta1 -> v1 conversion, the same steps as the API server's own conversion of the two
# CRD versions, plus what a v1 CRD requires and what Serin and Linkerd need:
# - every version gets the schema (spec.validation, or its own), subresources and printer
#   columns (JSONPath -> jsonPath); the deprecated top-level `version` is dropped;
# - served: what the SDK serves, and v1alpha1 and v1alpha2, the versions Linkerd serves and
#   Serin writes; storage: the SDK's storage version (exactly one); conversion: None, so
#   every served version reads and writes the same stored object;
# - structural: `type: object` where a schema has properties (and at the root), `type:
#   array` where it has items; x-kubernetes-preserve-unknown-fields only on a schema that
#   says nothing about its type;
# - v1alpha1's backend weight is a quantity (Serin writes 90, Linkerd also takes "900m"), so
#   its schema there is x-kubernetes-int-or-string instead of the SDK's `number`.
CONVERT='
import copy, json, sys
source, docs = sys.argv[1], json.load(sys.stdin)
crds = [d for d in docs if d.get("kind") == "CustomResourceDefinition"]
if len(crds) != 1:
    sys.exit(f"expected one CustomResourceDefinition in {source}, found {len(crds)}")
old = crds[0]["spec"]
SERIN_SERVES = {"v1alpha1", "v1alpha2"}

def structural(schema):
    if not isinstance(schema, dict):
        return schema
    schema = dict(schema)
    for key in ("properties", "patternProperties"):
        if key in schema:
            schema[key] = {k: structural(v) for k, v in schema[key].items()}
            schema.setdefault("type", "object")
    if isinstance(schema.get("additionalProperties"), dict):
        schema["additionalProperties"] = structural(schema["additionalProperties"])
        schema.setdefault("type", "object")
    if "items" in schema:
        schema["items"] = structural(schema["items"])
        schema.setdefault("type", "array")
    for key in ("allOf", "anyOf", "oneOf"):
        if key in schema:
            schema[key] = [structural(s) for s in schema[key]]
    if "not" in schema:
        schema["not"] = structural(schema["not"])
    if not ("type" in schema or schema.get("x-kubernetes-int-or-string")
            or schema.get("x-kubernetes-preserve-unknown-fields")):
        schema["x-kubernetes-preserve-unknown-fields"] = True
    return schema

def columns(cols):
    out = []
    for col in cols or []:
        col = dict(col)
        if "JSONPath" in col:
            col["jsonPath"] = col.pop("JSONPath")
        out.append(col)
    return out

versions = old.get("versions") or [{"name": old["version"], "served": True, "storage": True}]
storage = [v["name"] for v in versions if v.get("storage")]
if len(storage) != 1:
    sys.exit(f"{source}: expected exactly one storage version, found {storage}")
new_versions = []
for v in versions:
    name = v["name"]
    schema = copy.deepcopy((v.get("schema") or old.get("validation") or {}).get("openAPIV3Schema"))
    if schema is None:
        schema = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    schema = structural(schema)
    schema["type"] = "object"
    if name == "v1alpha1":
        weight = schema["properties"]["spec"]["properties"]["backends"]["items"]["properties"]["weight"]
        weight.pop("type", None)
        weight.pop("format", None)
        weight["x-kubernetes-int-or-string"] = True
    out = {
        "name": name,
        "served": bool(v.get("served")) or name in SERIN_SERVES,
        "storage": bool(v.get("storage")),
        "schema": {"openAPIV3Schema": schema},
    }
    subresources = v.get("subresources", old.get("subresources"))
    if subresources:
        out["subresources"] = subresources
    cols = columns(v.get("additionalPrinterColumns", old.get("additionalPrinterColumns")))
    if cols:
        out["additionalPrinterColumns"] = cols
    new_versions.append(out)
missing = SERIN_SERVES - {v["name"] for v in new_versions}
if missing:
    sys.exit(f"{source} has no version {sorted(missing)}; Serin writes them")
meta = crds[0]["metadata"]
crd = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {
        "name": meta["name"],
        "labels": {**meta.get("labels", {}), "app.kubernetes.io/part-of": "serin-local"},
        "annotations": {**meta.get("annotations", {}), "serin.dev/derived-from": source},
    },
    "spec": {
        "group": old["group"],
        "names": old["names"],
        "scope": old["scope"],
        "versions": new_versions,
        "conversion": {"strategy": "None"},
    },
}
print(json.dumps(crd, indent=2, sort_keys=True))
'

# Writes $DERIVED unless it is there already, derived from the same source by this script.
derive() {
  mkdir -p "$D"
  cached "$DERIVED" "$SMI_SOURCE" && return 0
  say "deriving the TrafficSplit CRD (v1) from $SMI_SOURCE"
  local dir; dir=$(module_dir "$SMI_MODULE" "$SMI_SDK_VERSION") ||
    die "cannot download $SMI_MODULE@$SMI_SDK_VERSION (go mod download)"
  [ -f "$dir/crds/split.yaml" ] || die "$SMI_MODULE@$SMI_SDK_VERSION has no crds/split.yaml"
  yaml_to_json "$dir/crds/split.yaml" | python3 -c "$CONVERT" "$SMI_SOURCE" >"$DERIVED.tmp"
  mv "$DERIVED.tmp" "$DERIVED"
}

# crd_list SOURCE WANTED WORK YAML...: the CustomResourceDefinitions of the files YAML... (as
# JSON in the directory WORK) as one List, each labelled part of the local environment and
# annotated with SOURCE; fails unless they are exactly WANTED (full names, or plurals alone)
# and all apiextensions/v1.
crd_list() {
  local source=$1 wanted=$2 work=$3 file parts=()
  shift 3
  mkdir -p "$work"
  for file in "$@"; do
    yaml_to_json "$file" >"$work/${file##*/}.json"
    parts+=("$work/${file##*/}.json")
  done
  python3 -c '
import json, sys
source, wanted, parts = sys.argv[1], sorted(sys.argv[2].split()), sys.argv[3:]
crds = [d for p in parts for d in json.load(open(p)) if d.get("kind") == "CustomResourceDefinition"]
names = sorted(d["metadata"]["name"] for d in crds)
if wanted not in (names, sorted(n.split(".")[0] for n in names)):
    sys.exit(f"{source}: expected the CRDs {wanted}, found {names}")
for crd in crds:
    meta = crd["metadata"]
    name = meta["name"]
    if crd.get("apiVersion") != "apiextensions.k8s.io/v1":
        sys.exit(f"{source}: {name} is not apiextensions.k8s.io/v1")
    meta["labels"] = {**meta.get("labels", {}), "app.kubernetes.io/part-of": "serin-local"}
    meta["annotations"] = {**meta.get("annotations", {}), "serin.dev/derived-from": source}
print(json.dumps({"apiVersion": "v1", "kind": "List", "items": crds}, indent=2, sort_keys=True))
' "$source" "$wanted" "${parts[@]}"
}

# Writes $GATEWAY_DERIVED unless cached: the module's CRDs as published (already
# apiextensions.k8s.io/v1), as one List, each labelled as part of the local environment and
# annotated with its source. Their schemas, CEL rules and versions are not touched.
derive_gateway_api() {
  mkdir -p "$D"
  cached "$GATEWAY_DERIVED" "$GATEWAY_SOURCE" && return 0
  say "taking the Gateway API CRDs from $GATEWAY_SOURCE"
  local dir; dir=$(module_dir "$GATEWAY_MODULE" "$GATEWAY_API_VERSION") ||
    die "cannot download $GATEWAY_MODULE@$GATEWAY_API_VERSION (go mod download)"
  local plural files=()
  for plural in $GATEWAY_CRDS; do
    files+=("$dir/$GATEWAY_DIR/gateway.networking.k8s.io_$plural.yaml")
    [ -f "${files[-1]}" ] ||
      die "$GATEWAY_MODULE@$GATEWAY_API_VERSION has no $GATEWAY_DIR/${files[-1]##*/}"
  done
  rm -rf "$D/gateway-api.parts"; mkdir -p "$D/gateway-api.parts"
  crd_list "$GATEWAY_SOURCE" "$GATEWAY_CRDS" "$D/gateway-api.parts" "${files[@]}" \
    >"$GATEWAY_DERIVED.tmp"
  rm -rf "$D/gateway-api.parts"
  mv "$GATEWAY_DERIVED.tmp" "$GATEWAY_DERIVED"
}

# Writes $GLOO_DERIVED unless cached: controller-gen run over Flagger's Gloo API packages in a
# throwaway module that requires Flagger at FLAGGER_VERSION (go mod tidy fetches what those
# packages import), its two CRDs as one List, labelled and annotated with their source.
derive_gloo() {
  mkdir -p "$D"
  cached "$GLOO_DERIVED" "$GLOO_SOURCE" && return 0
  say "generating the Gloo CRDs (Upstream, RouteTable) from $GLOO_SOURCE"
  "$ROOT/hack/deps.sh" controller-gen >/dev/null
  local work=$D/gloo-gen pkg imports="" paths=""
  rm -rf "$work"; mkdir -p "$work/src" "$work/out"
  for pkg in $GLOO_PACKAGES; do
    imports="$imports"$'\t_ "'"$FLAGGER_MODULE/$pkg"$'"\n'
    paths="$paths;$FLAGGER_MODULE/$pkg"
  done
  printf 'module serin.dev/localenv/gloo-crds\n\ngo 1.26.0\n\nrequire %s %s\n' \
    "$FLAGGER_MODULE" "$FLAGGER_VERSION" >"$work/src/go.mod"
  printf '//go:build tools\n\npackage tools\n\nimport (\n%s)\n' "$imports" >"$work/src/tools.go"
  say "gloo: go mod tidy (downloads $FLAGGER_MODULE@$FLAGGER_VERSION and what its Gloo types import)"
  (cd "$work/src" && GOFLAGS=${GOFLAGS:-} GOTOOLCHAIN=${GOTOOLCHAIN:-local} go mod tidy) ||
    die "cannot download $FLAGGER_MODULE@$FLAGGER_VERSION (go mod tidy in $work/src)"
  say "gloo: controller-gen crd over ${paths#;}"
  (cd "$work/src" && GOFLAGS=${GOFLAGS:-} GOTOOLCHAIN=${GOTOOLCHAIN:-local} \
    "$CONTROLLER_GEN" crd:allowDangerousTypes=true "paths=${paths#;}" "output:crd:dir=$work/out") ||
    die "controller-gen failed on $GLOO_SOURCE"
  compgen -G "$work/out/*.yaml" >/dev/null || die "controller-gen wrote no CRD for $GLOO_SOURCE"
  crd_list "$GLOO_SOURCE" "$GLOO_CRDS" "$work/json" "$work"/out/*.yaml >"$GLOO_DERIVED.tmp"
  rm -rf "$work"
  mv "$GLOO_DERIVED.tmp" "$GLOO_DERIVED"
}

# Serin's CRDs as in manifests/, their conversion webhook reached by `url:` on 127.0.0.1 (the
# local Serin's last port and CA when known; hack/serin.sh points it at the running one). A
# Service reference would be kept beside a later url and make the CRD invalid.
local_conversion() {
  local port bundle=""
  port=$(cat "$STATE/serin/port" 2>/dev/null || echo 9)
  [ -f "$STATE/serin/certs/ca.crt" ] && bundle=$(base64 -w0 <"$STATE/serin/certs/ca.crt")
  yaml_to_json "$OWN_CRDS" | python3 -c '
import json, sys
port, bundle = sys.argv[1], sys.argv[2]
docs = json.load(sys.stdin)
for crd in docs:
    webhook = crd["spec"].get("conversion", {}).get("webhook")
    if webhook:
        config = {"url": f"https://127.0.0.1:{port}/convert"}
        if bundle:
            config["caBundle"] = bundle
        webhook["clientConfig"] = config
print(json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}))' "$port" "$bundle"
}

# apply FILE: server-side (CRDs with large schemas do not fit in the last-applied annotation),
# then waits until every CRD in FILE is Established.
apply() {
  kubectl apply --server-side --force-conflicts --field-manager serin-local -f "$1" >/dev/null
  kubectl wait --for condition=established --timeout=60s -f "$1" >/dev/null ||
    die "the CRDs in $1 were not Established within 60s (read $STATE/cluster/kube-apiserver.log)"
}

up() {
  mkdir -p "$D"
  exec 9>"$D/.lock"; flock 9
  "$ROOT/hack/cluster.sh" status || die "the cluster is not running (hack/cluster.sh up)"
  derive
  apply "$DERIVED"
  say "TrafficSplit CRD established ($SMI_SOURCE, served: $(python3 -c '
import json, sys
print(", ".join(v["name"] + ("*" if v["storage"] else "") for v in json.load(open(sys.argv[1]))["spec"]["versions"] if v["served"]))' "$DERIVED"); * = storage)"
  derive_gateway_api
  apply "$GATEWAY_DERIVED"
  say "Gateway API CRDs established ($GATEWAY_SOURCE)"
  derive_gloo
  apply "$GLOO_DERIVED"
  say "Gloo CRDs established ($GLOO_SOURCE; Flagger's typed subset of Gloo's API)"
  # SERIN_OWN_CRDS=skip: hack/in-cluster.sh installs Serin's CRDs with its overlay.
  if [ -f "$OWN_CRDS" ] && [ "${SERIN_OWN_CRDS:-}" != skip ]; then
    local_conversion >"$D/serin-crds.json"
    # After Serin ran in the cluster (hack/in-cluster.sh) the conversion names the Service,
    # set by another field manager; url and service together are invalid, so drop it first.
    local crd
    for crd in canaries analysistemplates canarypolicies; do
      if [ -n "$(kubectl get crd "$crd.serin.dev" -o jsonpath='{.spec.conversion.webhook.clientConfig.service.name}' 2>/dev/null)" ]; then
        kubectl patch crd "$crd.serin.dev" --type merge -p "$(python3 -c '
import json, sys
for crd in json.load(open(sys.argv[1]))["items"]:
    if crd["metadata"]["name"] == sys.argv[2]:
        config = dict(crd["spec"]["conversion"]["webhook"]["clientConfig"], service=None)
        print(json.dumps({"spec": {"conversion": {"webhook": {"clientConfig": config}}}}))' "$D/serin-crds.json" "$crd.serin.dev")" >/dev/null
      fi
    done
    apply "$D/serin-crds.json"
    say "Serin's CRDs established (manifests/crds.yaml; conversion webhook on 127.0.0.1)"
  fi
}

case ${1:-} in
  up) up ;;
  derive)
    mkdir -p "$D"; exec 9>"$D/.lock"; flock 9
    derive; derive_gateway_api; derive_gloo
    echo "$DERIVED"; echo "$GATEWAY_DERIVED"; echo "$GLOO_DERIVED" ;;
  *) echo "usage: $0 up|derive" >&2; exit 2 ;;
esac
