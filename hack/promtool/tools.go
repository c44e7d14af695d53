//go:build tools

// Package tools pins the promtool CLI that CI checks and unit-tests the chart's
// PrometheusRule with (`promtool check rules`, `promtool test rules`);
// hack/build-promtool.sh builds it into the same per-version cache as helm.
package tools

import _ "github.com/prometheus/prometheus/cmd/promtool"
