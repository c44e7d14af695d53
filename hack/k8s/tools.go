//go:build tools

// Package tools pins the control-plane binaries entitle's tests run: kube-apiserver,
// kube-controller-manager and kubectl from k8s.io/kubernetes, and etcd from
// go.etcd.io/etcd/server/v3 at the version k8s.io/kubernetes itself requires.
// hack/build-control-plane.sh builds them; nothing imports this package.
package tools

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
