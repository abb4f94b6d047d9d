#!/usr/bin/env bash
# The Secrets deploy/k8s reads, made once per cluster (docs/KUBERNETES.md):
#   resplit-tls-<service>  tls.crt, tls.key, ca.crt (the layout cert-manager writes),
#                          one per control service and one shared by the workers
#   resplit-token          token: the bearer token of every gRPC call
#   resplit-redis          password: Redis's (hex, so it is safe inside a URL)
# From the development CA of `resplit certs` (its CA key stays on this machine, in
# $CERTS): replace with your own CA's certificates, or cert-manager Certificates
# writing the same Secret names, for production. Worker certificates name every pod
# (*.worker.<namespace>.svc.cluster.local: each worker advertises its pod's DNS name).
#   deploy/k8s/secrets.sh                 # namespace resplit, certificates in ./certs-k8s
#   NAMESPACE=x CERTS=dir deploy/k8s/secrets.sh
# Apply the manifests in the same namespace; `kubectl apply -k` uses the namespace
# named in deploy/k8s/kustomization.yaml (resplit), change it there too.
set -euo pipefail
NAMESPACE=${NAMESPACE:-resplit}
CERTS=${CERTS:-certs-k8s}
RESPLIT=${RESPLIT:-resplit}
SERVICES=(monitor splitter broadcaster orchestrator gateway)
domain="$NAMESPACE.svc.cluster.local"

hosts=(--host "*.worker.$domain")
names=(--name worker)
for service in "${SERVICES[@]}"; do
	names+=(--name "$service")
	hosts+=(--host "$service.$NAMESPACE" --host "$service.$domain")
done
"$RESPLIT" certs "$CERTS" "${names[@]}" "${hosts[@]}"

apply() { kubectl -n "$NAMESPACE" apply -f -; }
kubectl create namespace "$NAMESPACE" --dry-run=client -o yaml | kubectl apply -f -
for name in worker "${SERVICES[@]}"; do
	kubectl -n "$NAMESPACE" create secret generic "resplit-tls-$name" --dry-run=client -o yaml \
		--from-file=tls.crt="$CERTS/$name.pem" --from-file=tls.key="$CERTS/$name-key.pem" \
		--from-file=ca.crt="$CERTS/ca.pem" | apply
done
kubectl -n "$NAMESPACE" create secret generic resplit-token --dry-run=client -o yaml \
	--from-file=token="$CERTS/token" | apply
# A new Redis password only when there is none yet (the volume keeps Redis's data).
if ! kubectl -n "$NAMESPACE" get secret resplit-redis >/dev/null 2>&1; then
	kubectl -n "$NAMESPACE" create secret generic resplit-redis \
		--from-literal=password="$(python3 -c 'import secrets; print(secrets.token_hex(24))')"
fi
echo "Secrets in namespace $NAMESPACE; now: kubectl apply -k deploy/k8s"
