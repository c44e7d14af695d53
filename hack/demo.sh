#!/usr/bin/env bash
# The main job, end to end, on a local control plane: start it, install the CRDs, run the
# operator with its webhook, apply examples/01-basic, show a denial and the ledger's records.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
[ -x .venv/bin/entitle ] || { python3 -m venv .venv && .venv/bin/pip install -q -e '.[test]'; }
export PATH="$PWD/.venv/bin:$PATH"
bash hack/build-control-plane.sh
work="$(mktemp -d /tmp/entitle-demo.XXXXXX)"
op_pid=""
cleanup() {
  [ -n "$op_pid" ] && kill "$op_pid" 2>/dev/null && wait "$op_pid" 2>/dev/null || true
  entitle dev down --dir "$work/cp" >/dev/null 2>&1 || true
  echo "(operator log kept in $work/operator.log)"
}
trap cleanup EXIT

export KUBECONFIG="$(entitle dev up --dir "$work/cp")"
kubectl="$(python3 -c 'from entitle.devenv.assets import assets_dir; print(assets_dir() / "kubectl")')"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# Only the apiserver reviews: the webhook trusts the CA of the client certificate `entitle dev up`
# gave its apiserver (webhook-client-ca.crt beside the kubeconfig); anyone else is refused.
cat > "$work/config.yaml" <<CFG
ledgerPath: $work/ledger.db
metricsPort: null
webhook: {listenHost: 127.0.0.1, port: $port, registerURL: "https://127.0.0.1:$port",
          clientCAFile: "$(dirname "$KUBECONFIG")/webhook-client-ca.crt"}
CFG

echo "== install the CRDs"
"$kubectl" apply -f crds/
"$kubectl" wait --for=condition=established crd/licenses.entitle.dev crd/workloads.entitle.dev >/dev/null

echo "== run the operator (webhook on 127.0.0.1:$port)"
entitle run --config "$work/config.yaml" >"$work/operator.log" 2>&1 &
op_pid=$!
for _ in $(seq 100); do
  "$kubectl" get validatingwebhookconfiguration entitle >/dev/null 2>&1 && \
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.2
done

echo "== apply examples/01-basic"
"$kubectl" apply -f examples/01-basic/manifests.yaml
echo "== one container over the cap"
"$kubectl" apply -f examples/01-basic/over-cap.yaml || true
sleep 2
"$kubectl" get lic,ewl -A
echo "== a review posted by anyone but the apiserver is refused unread"
curl -sk -o /dev/null -w "HTTP %{http_code}\n" -X POST "https://127.0.0.1:$port/workloads" -d '{}' || true
echo "== the usage ledger"
python3 - "$work/ledger.db" <<'PY'
import json, sqlite3, sys
for (body,) in sqlite3.connect(sys.argv[1]).execute("SELECT body FROM records ORDER BY seq"):
    r = json.loads(body); d = r["data"]
    print(r["time"], r["type"], d.get("name"), d.get("operation"), "units=%s" % d.get("units", "-"))
PY
