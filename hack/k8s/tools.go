//go:build tools

// Package tools pins the binaries entitle's tests run: kube-apiserver,
// kube-controller-manager and kubectl from k8s.io/kubernetes, etcd from
// go.etcd.io/etcd/server/v3 at the version k8s.io/kubernetes itself requires, and -- for the
// real-node harness -- kubelet, kube-scheduler and kube-proxy of the same release.
// hack/build-control-plane.sh builds them; nothing imports this package.
package tools

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
