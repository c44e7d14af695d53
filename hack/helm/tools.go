//go:build tools

// Package tools pins the helm CLI that CI lints, renders and installs the chart with;
// hack/build-helm.sh builds it into the same per-version cache as the control plane.
package tools

import _ "helm.sh/helm/v3/cmd/helm"
