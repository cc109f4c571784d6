#!/usr/bin/env bash
# A single-node Kubernetes cluster on this Linux machine, for trying the
# manifests of deploy/kubernetes and testing them (`make test-k8s`).
#
#	cluster.sh up      build, start, import the images, deploy CoreDNS
#	cluster.sh apply   build the example's image again and apply the manifests
#	cluster.sh down    stop everything and remove what the cluster added
#	cluster.sh test    up, apply, the tests of deploy/kubernetes/clustertest, down
#
# Needs root, Linux, Go, and Debian's containerd, runc,
# containernetworking-plugins, iptables, conntrack and openssl (installed
# with apt-get when missing). The components are built from Go modules
# pinned in go.mod beside this file (Kubernetes v1.34.4, etcd v3.6.4) and
# coredns/go.mod; the Go build cache makes later builds quick.
#
# Everything lives under $GOMS_K8S_DIR (default: $TMPDIR/goms-k8s). The
# network: the node's address 198.18.1.1 on the bridge goms-k8s0, pods in
# 198.18.1.0/24, Services in 198.19.0.0/24 routed to the bridge, no
# masquerading; net.ipv4.ip_forward is on only while the cluster runs. The
# control plane listens on 127.0.0.1, the API server and the kubelet on the
# node's address. `down` (and `test`, always, on exit or signal) stops the
# components one at a time, etcd last, then removes the pods, their network
# namespaces and mounts, the iptables chains, the bridge and the route.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../../.." && pwd)"
DIR="${GOMS_K8S_DIR:-${TMPDIR:-/tmp}/goms-k8s}"
BIN="$DIR/bin"
PKI="$DIR/pki"
RUN="$DIR/run"
LOGS="$DIR/log"
SOCK="$DIR/containerd/containerd.sock"

K8S_VERSION=v1.34.4
NODE=goms-node
BRIDGE=goms-k8s0
NODE_IP=198.18.1.1
POD_CIDR=198.18.1.0/24
SERVICE_CIDR=198.19.0.0/24
API_SERVICE_IP=198.19.0.1
DNS_SERVICE_IP=198.19.0.10
# containerd's sandbox image: the pause program of cmd/pause, imported
# under this name.
PAUSE_IMAGE=goms.invalid/pause:1
COREDNS_IMAGE=goms.invalid/coredns:v1.15.0
APP_IMAGE=goms-distributed:dev
NAMESPACE="${GOMS_K8S_NAMESPACE:-goms-demo}"
# Host sysctls the cluster changes, restored by down.
SYSCTLS=(net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables
	vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
	kernel.keys.root_maxkeys kernel.keys.root_maxbytes)

export PATH="$BIN:$PATH"
export KUBECONFIG="$DIR/admin.kubeconfig"

log() { printf '%s cluster: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }

# step NAME COMMAND... runs the command and reports its time.
step() {
	local name="$1" start=$SECONDS
	shift
	"$@"
	log "step $name: $((SECONDS - start))s"
}

# wait_for WHAT SECONDS COMMAND... polls the command every half second,
# each try bounded to 10s.
wait_for() {
	local what="$1" timeout="$2" deadline=$((SECONDS + $2))
	shift 2
	until timeout 10 "$@" >/dev/null 2>&1; do
		if ((SECONDS >= deadline)); then
			log "gave up after ${timeout}s waiting for $what"
			return 1
		fi
		sleep 0.5
	done
}

# ---------------------------------------------------------------- setup

need_root() {
	[[ "$(id -u)" == 0 ]] || die "the cluster needs root (network, mounts, cgroups)"
	[[ "$(uname -s)" == Linux ]] || die "the cluster needs Linux"
}

packages() {
	local missing=()
	command -v containerd >/dev/null || missing+=(containerd)
	command -v runc >/dev/null || missing+=(runc)
	[[ -x /usr/lib/cni/bridge ]] || missing+=(containernetworking-plugins)
	command -v iptables >/dev/null || missing+=(iptables)
	command -v conntrack >/dev/null || missing+=(conntrack)
	command -v openssl >/dev/null || missing+=(openssl)
	command -v curl >/dev/null || missing+=(curl)
	command -v ip >/dev/null || missing+=(iproute2)
	((${#missing[@]} == 0)) && return
	log "installing Debian's ${missing[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# build compiles the components; go build skips what is up to date.
build() {
	mkdir -p "$BIN"
	local ldflags="-s -w" pkg
	for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=34"
		ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
	done
	(cd "$HERE" && go build -ldflags "$ldflags" -o "$BIN/" tool ./cmd/etcd ./cmd/imagetar ./cmd/crireset)
	# What runs in a container is static.
	(cd "$HERE" && CGO_ENABLED=0 go build -ldflags "-s -w" -o "$BIN/pause" ./cmd/pause)
	(cd "$HERE/coredns" && CGO_ENABLED=0 go build -ldflags "-s -w" -o "$BIN/coredns" .)
	(cd "$REPO" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$BIN/distributed" ./examples/distributed)
}

# pki makes a CA, the API server's and the kubelet's serving certificates,
# the API server's client certificate for the kubelet, the service
# account key, and a token per client.
pki() {
	mkdir -p "$PKI"
	cd "$PKI"
	openssl req -x509 -new -nodes -newkey rsa:2048 -days 2 -subj /CN=goms-k8s-ca \
		-keyout ca.key -out ca.crt 2>/dev/null
	sign apiserver /CN=kube-apiserver serverAuth \
		"IP:$NODE_IP,IP:$API_SERVICE_IP,IP:127.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
	sign kubelet "/CN=system:node:$NODE/O=system:nodes" serverAuth "IP:$NODE_IP,DNS:$NODE"
	sign apiserver-kubelet-client /CN=kube-apiserver-kubelet-client/O=system:masters clientAuth ""
	openssl genrsa -out sa.key 2048 2>/dev/null
	openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
	: >tokens.csv
	token admin admin "system:masters"
	token kubelet "system:node:$NODE" "system:nodes"
	token controller-manager system:kube-controller-manager ""
	token scheduler system:kube-scheduler ""
	token proxy system:kube-proxy ""
	cp admin.kubeconfig "$KUBECONFIG"
	cd - >/dev/null
}

# sign NAME SUBJECT USAGE SANS writes NAME.key and NAME.crt signed by the CA.
sign() {
	local ext="extendedKeyUsage=$3"
	[[ -n "$4" ]] && ext+=$'\n'"subjectAltName=$4"
	openssl req -new -nodes -newkey rsa:2048 -subj "$2" -keyout "$1.key" 2>/dev/null |
		openssl x509 -req -CA ca.crt -CAkey ca.key -set_serial "0x$(openssl rand -hex 8)" -days 2 \
			-extfile <(printf '%s\n' "$ext") -out "$1.crt" 2>/dev/null
}

# token NAME USER GROUPS adds a token for USER and writes NAME.kubeconfig.
token() {
	local secret
	secret="$(openssl rand -hex 16)"
	printf '%s,%s,%s,"%s"\n' "$secret" "$2" "$2" "$3" >>tokens.csv
	cat >"$1.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
  - name: goms-k8s
    cluster: {server: "https://$NODE_IP:6443", certificate-authority: "$PKI/ca.crt"}
users:
  - name: $1
    user: {token: "$secret"}
contexts:
  - name: goms-k8s
    context: {cluster: goms-k8s, user: $1}
current-context: goms-k8s
EOF
}

# ------------------------------------------------------------ components

# start NAME COMMAND... runs a component in its own session, logging to
# log/NAME.log, its pid in run/NAME.pid.
start() {
	local name="$1"
	shift
	setsid "$@" >"$LOGS/$name.log" 2>&1 </dev/null &
	echo $! >"$RUN/$name.pid"
}

# stop NAME SECONDS sends SIGTERM, then SIGKILL after SECONDS.
stop() {
	local pidfile="$RUN/$1.pid" pid deadline
	[[ -f "$pidfile" ]] || return 0
	pid="$(<"$pidfile")"
	if kill -0 "$pid" 2>/dev/null && [[ "$(readlink "/proc/$pid/exe" 2>/dev/null)" == *"$1"* ]]; then
		kill -TERM "$pid" 2>/dev/null || true
		deadline=$((SECONDS + $2))
		while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
		if kill -0 "$pid" 2>/dev/null; then
			log "$1 did not stop in $2s: SIGKILL"
			kill -KILL "$pid" 2>/dev/null || true
			sleep 0.2
		fi
	fi
	rm -f "$pidfile"
}

running() { [[ -f "$RUN/$1.pid" ]] && kill -0 "$(<"$RUN/$1.pid")" 2>/dev/null; }

# alive NAME fails (with the end of its log) when the component has exited.
alive() {
	running "$1" && return 0
	log "$1 exited; the end of $LOGS/$1.log:"
	tail -n 20 "$LOGS/$1.log" >&2
	return 1
}

network() {
	local s
	: >"$RUN/sysctl"
	for s in "${SYSCTLS[@]}"; do
		echo "$s=$(sysctl -n "$s" 2>/dev/null)" >>"$RUN/sysctl"
	done
	ls /var/run/netns 2>/dev/null >"$RUN/netns" || true
	ip link add "$BRIDGE" type bridge
	ip addr add "$NODE_IP/24" dev "$BRIDGE"
	ip link set "$BRIDGE" up
	ip route add "$SERVICE_CIDR" dev "$BRIDGE" src "$NODE_IP"
	sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1
	mkdir -p "$DIR/cni/net.d" "$DIR/cni/ipam"
	cat >"$DIR/cni/net.d/10-goms-k8s.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "goms-k8s",
  "plugins": [{
    "type": "bridge", "bridge": "$BRIDGE",
    "isGateway": true, "isDefaultGateway": true, "ipMasq": false, "hairpinMode": true,
    "ipam": {
      "type": "host-local", "dataDir": "$DIR/cni/ipam",
      "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$NODE_IP", "rangeStart": "198.18.1.10"}]]
    }
  }]
}
EOF
}

containerd_up() {
	mkdir -p "$DIR/containerd"
	cat >"$DIR/containerd/config.toml" <<EOF
version = 2
root = "$DIR/containerd/root"
state = "$DIR/containerd/state"
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "$SOCK"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # root here lacks CAP_SYS_RESOURCE: lowering oom_score_adj fails in runc
  # unless it is kept at or above the runtime's own.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$DIR/cni/net.d"
EOF
	start containerd containerd --config "$DIR/containerd/config.toml"
	wait_for containerd 30 ctr --address "$SOCK" version
}

import_images() {
	local img="$DIR/images"
	mkdir -p "$img"
	imagetar -o "$img/pause.tar" -name "$PAUSE_IMAGE" -entrypoint /pause -user 65535:65535 "$BIN/pause=/pause"
	imagetar -o "$img/coredns.tar" -name "$COREDNS_IMAGE" -entrypoint /coredns -user 65532:65532 "$BIN/coredns=/coredns"
	app_image
	ctr --address "$SOCK" -n k8s.io images import "$img/pause.tar" >/dev/null
	ctr --address "$SOCK" -n k8s.io images import "$img/coredns.tar" >/dev/null
}

# app_image makes and imports the example's image, as deploy/Dockerfile
# would: the static binary as /distributed, run as 65532.
app_image() {
	imagetar -o "$DIR/images/distributed.tar" -name "$APP_IMAGE" -entrypoint /distributed \
		-user 65532:65532 "$BIN/distributed=/distributed"
	ctr --address "$SOCK" -n k8s.io images import "$DIR/images/distributed.tar" >/dev/null
}

control_plane_up() {
	start etcd etcd --name goms-k8s --data-dir "$DIR/etcd" \
		--listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
		--listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
		--initial-cluster goms-k8s=http://127.0.0.1:2380 --listen-metrics-urls http://127.0.0.1:2381
	wait_for etcd 30 curl -fsS http://127.0.0.1:2381/health || { alive etcd; return 1; }
	start kube-apiserver kube-apiserver --etcd-servers http://127.0.0.1:2379 \
		--bind-address "$NODE_IP" --advertise-address "$NODE_IP" --secure-port 6443 \
		--service-cluster-ip-range "$SERVICE_CIDR" \
		--tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
		--client-ca-file "$PKI/ca.crt" --token-auth-file "$PKI/tokens.csv" \
		--authorization-mode Node,RBAC \
		--kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" \
		--kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
		--kubelet-certificate-authority "$PKI/ca.crt" --kubelet-preferred-address-types InternalIP \
		--service-account-issuer https://kubernetes.default.svc.cluster.local \
		--service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
		--cert-dir "$DIR/apiserver" --profiling=false
	wait_for kube-apiserver 180 kubectl get --raw /readyz || { alive kube-apiserver; return 1; }
	start kube-controller-manager kube-controller-manager --kubeconfig "$PKI/controller-manager.kubeconfig" \
		--bind-address 127.0.0.1 --leader-elect=false --use-service-account-credentials \
		--service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
		--cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
		--profiling=false
	start kube-scheduler kube-scheduler --kubeconfig "$PKI/scheduler.kubeconfig" \
		--bind-address 127.0.0.1 --leader-elect=false --profiling=false
}

node_up() {
	mkdir -p "$DIR/kubelet"
	cat >"$DIR/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
tlsCertFile: $PKI/kubelet.crt
tlsPrivateKeyFile: $PKI/kubelet.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: AlwaysAllow}
containerRuntimeEndpoint: unix://$SOCK
podLogsDir: $DIR/pod-logs
# cgroups v1 without systemd; 1.35 and later refuse v1.
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
clusterDNS: [$DNS_SERVICE_IP]
clusterDomain: cluster.local
resolvConf: ""
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
EOF
	start kubelet kubelet --config "$DIR/kubelet.yaml" --kubeconfig "$PKI/kubelet.kubeconfig" \
		--root-dir "$DIR/kubelet" --hostname-override "$NODE" --node-ip "$NODE_IP"
	cat >"$DIR/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $PKI/proxy.kubeconfig}
hostnameOverride: $NODE
mode: iptables
clusterCIDR: $POD_CIDR
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: ["$NODE_IP/32"]
# Leave the host's conntrack settings alone.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
iptables: {localhostNodePorts: false, minSyncPeriod: 0s}
EOF
	start kube-proxy kube-proxy --config "$DIR/kube-proxy.yaml"
	wait_for "node $NODE Ready" 180 kubectl wait --for=condition=Ready "node/$NODE" --timeout=2s ||
		{ alive kubelet; alive kube-proxy; alive containerd; return 1; }
}

dns_up() {
	sed -e "s|@COREDNS_IMAGE@|$COREDNS_IMAGE|" -e "s|@DNS_SERVICE_IP@|$DNS_SERVICE_IP|" \
		"$HERE/coredns.yaml" | timeout 120 kubectl apply -f - >/dev/null
	kubectl -n kube-system rollout status deployment/coredns --timeout=180s >/dev/null
}

# not_up fails when a cluster is up or was not torn down; checked before
# the traps that would tear it down.
not_up() {
	need_root
	if running kube-apiserver || ip link show "$BRIDGE" >/dev/null 2>&1; then
		die "a cluster is already up (or was not torn down): $0 down"
	fi
}

up() {
	step packages packages
	step build build
	rm -rf "$PKI" "$RUN" "$LOGS" "$DIR/etcd" "$DIR/kubelet" "$DIR/containerd" "$DIR/cni" "$DIR/apiserver"
	mkdir -p "$RUN" "$LOGS"
	step pki pki
	step network network
	step containerd containerd_up
	step images import_images
	step control-plane control_plane_up
	step node node_up
	step dns dns_up
	log "up: kubectl --kubeconfig $KUBECONFIG (binaries in $BIN)"
}

apply() {
	step image app_image
	kubectl create namespace "$NAMESPACE" --dry-run=client -o yaml | timeout 120 kubectl apply -f - >/dev/null
	timeout 120 kubectl -n "$NAMESPACE" apply -k "$REPO/deploy/kubernetes"
	local d
	for d in goms child edge; do
		kubectl -n "$NAMESPACE" rollout status "deployment/$d" --timeout=180s
	done
}

# ------------------------------------------------------------- teardown

down() {
	need_root
	# Whatever fails, the rest is still removed.
	set +e
	local c
	# The node first, so that nothing restarts the pods, then the control
	# plane; etcd last.
	for c in kube-proxy kubelet kube-scheduler kube-controller-manager kube-apiserver; do
		stop "$c" 10
	done
	stop etcd 10
	# The pods: their network (CNI DEL), network namespaces and mounts.
	if running containerd; then
		timeout 90 crireset -endpoint "unix://$SOCK" -timeout 60s || log "crireset failed; removing what is left"
		local id
		for id in $(timeout 20 ctr --address "$SOCK" -n k8s.io tasks ls -q 2>/dev/null); do
			timeout 10 ctr --address "$SOCK" -n k8s.io tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true
			timeout 10 ctr --address "$SOCK" -n k8s.io tasks delete -f "$id" >/dev/null 2>&1 || true
		done
	fi
	stop containerd 20
	# Shims of this containerd still running (those were started with its
	# socket as -address): kill them.
	local pid
	for pid in $(pgrep -f -- "-address $SOCK" 2>/dev/null || true); do
		kill -KILL "$pid" 2>/dev/null || true
	done
	# Network namespaces the runtime made and did not remove.
	local ns
	for ns in $(ls /var/run/netns 2>/dev/null || true); do
		if [[ "$ns" == cni-* ]] && ! grep -qx "$ns" "$RUN/netns" 2>/dev/null; then
			ip netns delete "$ns" 2>/dev/null || true
		fi
	done
	# Mounts under the scratch directory, deepest first.
	local m
	for m in $(awk -v d="$DIR/" 'index($2, d) == 1 {print $2}' /proc/mounts | sort -r); do
		umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
	done
	iptables_clean
	# The kubelet's cgroups.
	for c in /sys/fs/cgroup/*/kubepods; do
		[[ -d "$c" ]] && { find "$c" -depth -type d -exec rmdir {} + 2>/dev/null || true; }
	done
	# The kubelet's links to the containers' logs.
	find /var/log/containers -maxdepth 1 -lname "$DIR/*" -delete 2>/dev/null || true
	ip link del "$BRIDGE" 2>/dev/null || true
	ip route del "$SERVICE_CIDR" 2>/dev/null || true
	sysctl_restore
	rm -f "$KUBECONFIG"
	log "down: cluster stopped and removed (logs in $LOGS)"
}

# iptables_clean removes the KUBE-* chains of kube-proxy and the kubelet,
# and the rules that jump to them, from every table, IPv4 and IPv6 (nft and
# legacy back ends).
iptables_clean() {
	if [[ -x "$BIN/kube-proxy" ]]; then
		timeout 30 "$BIN/kube-proxy" --cleanup >/dev/null 2>&1 || true
	fi
	local cmd table rule chain
	for cmd in iptables-nft ip6tables-nft iptables-legacy ip6tables-legacy; do
		command -v "$cmd" >/dev/null || continue
		for table in filter nat mangle raw; do
			"$cmd" -t "$table" -S 2>/dev/null | { grep -E '^-A [A-Z]+ .*-j KUBE-' || true; } |
				while read -r rule; do
					# The rule as iptables -S quotes it (comments have spaces).
					eval "\"\$cmd\" -t \"\$table\" -D ${rule#-A }" 2>/dev/null || true
				done
			for chain in $("$cmd" -t "$table" -S 2>/dev/null | awk '/^-N KUBE-/ {print $2}'); do
				"$cmd" -t "$table" -F "$chain" 2>/dev/null || true
			done
			for chain in $("$cmd" -t "$table" -S 2>/dev/null | awk '/^-N KUBE-/ {print $2}'); do
				"$cmd" -t "$table" -X "$chain" 2>/dev/null || true
			done
		done
	done
}

sysctl_restore() {
	[[ -f "$RUN/sysctl" ]] || { sysctl -qw net.ipv4.ip_forward=0; return; }
	local line
	while read -r line; do
		[[ "$line" == *= ]] && continue
		sysctl -qw "$line" 2>/dev/null || true
	done <"$RUN/sysctl"
	rm -f "$RUN/sysctl"
}

# ----------------------------------------------------------------- test

test_cluster() {
	not_up
	trap 'down' EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	step up up
	step apply apply
	local start=$SECONDS
	(cd "$REPO/deploy" && GOMS_K8S_DIR="$DIR" GOMS_K8S_NAMESPACE="$NAMESPACE" \
		go test -count=1 -timeout 20m -v ./kubernetes/clustertest/)
	log "step tests: $((SECONDS - start))s"
}

case "${1:-}" in
up)
	not_up
	trap 'rc=$?; if ((rc != 0)); then log "up failed: tearing down"; down; fi' EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	up
	;;
apply) apply ;;
down) down ;;
test) test_cluster ;;
build) build ;;
*)
	echo "usage: $0 up|apply|down|test|build" >&2
	exit 2
	;;
esac
